"""Settings of `nla extract`, kept free of heavy imports so the CLI can read its defaults."""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from nla.data.corpus import DEFAULT_CORPUS
from nla.data.sampling import SplitFractions
from nla.errors import NLAError
from nla.models.presets import DEFAULT_MODEL


@dataclass
class ExtractConfig:
    """Settings of one extraction run (written to OUT/config.yaml)."""

    out: Path
    model: str = DEFAULT_MODEL
    corpus: str = DEFAULT_CORPUS
    text_field: str = "text"  # field / column holding the text in .jsonl and .parquet corpora
    layer: int | None = None  # None: floor(2L/3)
    positions_per_doc: int = 8
    min_position: int = 16  # early positions decode poorly and carry little context
    max_doc_tokens: int = 512  # longer documents are cut before positions are sampled
    max_docs: int | None = None  # use the first N documents of the corpus
    seed: int = 42
    splits: SplitFractions = field(default_factory=SplitFractions)
    batch_tokens: int = 8192  # rows x longest row per forward pass
    chunk_docs: int = 256  # documents per resumable chunk
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False  # only for hub models that need their own code
    overwrite: bool = False

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

