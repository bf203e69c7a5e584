"""Settings of `nla extract`, kept free of heavy imports so the CLI can read its defaults."""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from nla.changes import setting
from nla.data.corpus import DEFAULT_CORPUS
from nla.data.sampling import SplitFractions
from nla.errors import NLAError
from nla.models.presets import DEFAULT_MODEL


@dataclass
class ExtractConfig:
    """Settings of one extraction run (written to OUT/config.yaml)."""

    out: Path = setting(help="Output folder (one parquet + sidecar per split).")
    model: str = setting(DEFAULT_MODEL, "Preset (smollm2-135m, gemma3-270m), local HF folder, .gguf file, or hub id.")
    corpus: str = setting(DEFAULT_CORPUS, "'default' (embedded), 'default+personas', a .txt/.jsonl/.parquet file, "
                          "or hf:NAME[:CONFIG][@SPLIT].")
    text_field: str = setting("text", "Text field (.jsonl) or column (.parquet).")
    layer: int | None = setting(None, "Layer K (output of block K); default floor(2L/3).")
    positions_per_doc: int = setting(8, "Positions sampled per document.")
    min_position: int = setting(16, "Earliest token position that may be sampled (early positions carry little "
                                "context).")
    max_doc_tokens: int = setting(512, "Cut longer documents to this many tokens (before positions are sampled).")
    max_docs: int | None = setting(None, "Use only the first N documents.")
    seed: int = setting(42, "Keys position sampling and splits (with the doc id).")
    splits: SplitFractions = field(default_factory=SplitFractions)  # the command line: --validation, --test
    batch_tokens: int = setting(8192, "Tokens per forward pass (rows x longest row).")
    chunk_docs: int = setting(256, "Documents per resumable chunk.")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N.")
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16.")
    trust_remote_code: bool = setting(False, "Run a hub model's own code (only if you trust it).")
    overwrite: bool = setting(False, "Replace an existing extraction in --out, and what was made from it inside it "
                              "(explanations-*/); the old one stays whole until the new is done.")

    def __post_init__(self):
        self.out = Path(self.out)
        if isinstance(self.splits, dict):
            self.splits = SplitFractions(**self.splits)
        for name in ("positions_per_doc", "max_doc_tokens", "batch_tokens", "chunk_docs"):
            if getattr(self, name) < 1:
                raise NLAError(f"{name.replace('_', '-')} must be at least 1")
        if self.min_position < 0:
            raise NLAError("min-position must be >= 0")
        if self.min_position >= self.max_doc_tokens:
            raise NLAError("min-position must be below max-doc-tokens, or no position can be sampled")
        if self.max_docs is not None and self.max_docs < 1:
            raise NLAError("max-docs must be at least 1")

    def settings(self) -> dict:
        """What determines the output (a resumed run must match it exactly)."""
        data = asdict(self)
        for key in ("out", "overwrite", "batch_tokens", "device", "trust_remote_code"):
            data.pop(key)
        return data

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]


def defaults(cls) -> dict:
    """Field defaults of a config dataclass (the CLI's option defaults come from here)."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

