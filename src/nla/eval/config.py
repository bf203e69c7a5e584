"""Settings of `nla eval`, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.autoencoder.decoding import MAX_NEW_TOKENS, TEMPERATURE
from nla.changes import setting
from nla.errors import NLAError


@dataclass
class EvalConfig:
    out: Path = setting(help="Output folder: eval.json, rows.parquet, fve_by_*.png.")
    nla: str | Path | None = setting(None, "The NLA (default: the one shipped in nla): an nla folder (av/ + ar/, or "
                                     "their LoRA adapters), a registry name or a hub prefix. Or pass --nla-av and "
                                     "--nla-ar.")
    nla_av: str | None = setting(None, "The AV alone: a released AV folder or hub id (with --nla-ar).")
    nla_ar: str | None = setting(None, "The AR alone: a released AR folder or hub id (with --nla-av).")
    data: Path | None = setting(None, "Held-out split; default: the NLA's dataset validation split.")
    max_rows: int | None = setting(None, "Evaluate a seeded sample of N rows (default: all).")
    oracle_ar: Path | None = setting(None, "AR from nla train-ar --text-column detokenized_text_truncated: the "
                                     "true-context ceiling (its control is skipped without it).")
    robustness: bool = setting(False, "Also score each explanation rewritten without changing its meaning (sentences "
                               "shuffled, quotes removed, prose removed, paraphrased): the share of FVE kept.")
    fresh_ar: Path | None = setting(None, "With --robustness: an AR trained apart from this NLA on its AV's "
                                    "explanations; the FVE it gets from them.")
    rewrite_backend: str | None = setting(None, "With --robustness: anthropic or openai, for a model paraphrase and "
                                          "a French translation of each explanation (default: offline rewrites "
                                          "only).")
    rewrite_model: str | None = setting(None, "The rewrite backend's model (default: the explainer's default).")
    base_url: str | None = setting(None, "The rewrite backend's URL (e.g. a local OpenAI-compatible server).")
    api_key_env: str | None = setting(None, "The environment variable holding the rewrite backend's key (none: a "
                                      "keyless local server).")
    mean_from: Path | None = setting(None, "Split whose mean activation is the predict-the-mean control; default: "
                                     "ar_sft.parquet next to --data.")
    batch_size: int = setting(32, "Activations explained together.")
    max_new_tokens: int = setting(MAX_NEW_TOKENS, "Longest explanation, in tokens (the release: 200); one that "
                                  "reaches it without its closing tag is reported as truncated.")
    temperature: float = setting(TEMPERATURE, "0: greedy (the release's examples); above 0: sampled.")
    seed: int = setting(0, "Keys the row sample and the shuffled-AV permutation.")
    buckets: int = setting(5, "Position and norm buckets of the plots.")
    device: str = setting("auto", "Where the target, AV and AR go: auto (the GPU; spread over all GPUs when there "
                          "are several; else the CPU), cpu, cuda, cuda:N.")
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16.")
    overwrite: bool = setting(False, "Replace a finished evaluation (explanations made with the same AV settings "
                              "are reused).")

    def __post_init__(self):
        self.out = Path(self.out)
        self.data, self.oracle_ar, self.mean_from, self.fresh_ar = (
            Path(p) if p is not None else None for p in (self.data, self.oracle_ar, self.mean_from, self.fresh_ar))
        if (self.fresh_ar is not None or self.rewrite_backend is not None) and not self.robustness:
            raise NLAError("--fresh-ar and --rewrite-backend are part of --robustness; add --robustness")
        if self.max_rows is not None and self.max_rows < 2:
            raise NLAError("max-rows must be at least 2 (the shuffled control needs another row to read)")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.buckets < 1:
            raise NLAError("batch-size, max-new-tokens and buckets must be at least 1")
        if self.temperature < 0:
            raise NLAError("temperature must be at least 0 (0: greedy)")
