"""Settings of `nla eval`, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.errors import NLAError


@dataclass
class EvalConfig:
    nla: Path  # folder with av/ and ar/
    out: Path
    data: Path | None = None  # held-out split; default: the validation split of the NLA's dataset
    max_rows: int | None = None  # a seeded sample of this many rows (all rows when None)
    oracle_ar: Path | None = None  # AR trained on true contexts; its control is skipped when None
    mean_from: Path | None = None  # default: ar_sft.parquet next to the held-out split
    batch_size: int = 32
    max_new_tokens: int = 150
    seed: int = 0
    buckets: int = 5  # position and norm buckets of the plots
    device: str = "auto"
    overwrite: bool = False

    def __post_init__(self):
        self.nla, self.out = Path(self.nla), Path(self.out)
        self.data, self.oracle_ar, self.mean_from = (Path(p) if p is not None else None
                                                     for p in (self.data, self.oracle_ar, self.mean_from))
        if self.max_rows is not None and self.max_rows < 2:
            raise NLAError("max-rows must be at least 2 (the shuffled control needs another row to read)")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.buckets < 1:
            raise NLAError("batch-size, max-new-tokens and buckets must be at least 1")
