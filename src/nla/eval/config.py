"""Settings of `nla eval`, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.autoencoder.decoding import MAX_NEW_TOKENS, TEMPERATURE
from nla.errors import NLAError


@dataclass
class EvalConfig:
    nla: str | Path | None  # an nla folder (av/ + ar/) or a hub prefix; None with nla_av + nla_ar
    out: Path
    data: Path | None = None  # held-out split; default: the validation split of the NLA's dataset
    max_rows: int | None = None  # a seeded sample of this many rows (all rows when None)
    oracle_ar: Path | None = None  # AR trained on true contexts; its control is skipped when None
    mean_from: Path | None = None  # default: ar_sft.parquet next to the held-out split
    batch_size: int = 32
    max_new_tokens: int = MAX_NEW_TOKENS
    temperature: float = TEMPERATURE  # 0: greedy
    seed: int = 0
    buckets: int = 5  # position and norm buckets of the plots
    device: str = "auto"
    dtype: str = "auto"  # bf16 on CUDA, fp32 on CPU
    nla_av: str | None = None  # the AV and AR as released folders or hub ids, instead of nla
    nla_ar: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        self.out = Path(self.out)
        self.data, self.oracle_ar, self.mean_from = (Path(p) if p is not None else None
                                                     for p in (self.data, self.oracle_ar, self.mean_from))
        if self.max_rows is not None and self.max_rows < 2:
            raise NLAError("max-rows must be at least 2 (the shuffled control needs another row to read)")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.buckets < 1:
            raise NLAError("batch-size, max-new-tokens and buckets must be at least 1")
        if self.temperature < 0:
            raise NLAError("temperature must be at least 0 (0: greedy)")
