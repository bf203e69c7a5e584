"""(explanation, activation) pairs: what `nla explain-data` writes and the SFT stages read."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml

from nla.data.dataset import sidecar_path, vectors_of
from nla.errors import NLAError


def read_pairs(path: Path, text_column: str = "explanation") -> tuple[list[str], torch.Tensor, dict]:
    """Texts (by default the explanations), their activations (N, d) fp32, and the dataset sidecar (empty if none)."""
    if not path.exists():
        raise NLAError(f"{path} not found; run nla explain-data first and pass one of its parquet files")
    table = pq.read_table(path)
    if text_column not in table.column_names:
        fix = "pass the output of nla explain-data" if text_column == "explanation" else \
            "pass an activation dataset split (it has detokenized_text_truncated) or another --text-column"
        raise NLAError(f"{path} has no {text_column} column; {fix}")
    texts = table.column(text_column).to_pylist()
    if any(t is None for t in texts):
        raise NLAError(f"{path} has empty {text_column} values; drop those rows or pick another --text-column")
    meta = yaml.safe_load(sidecar_path(path).read_text()) if sidecar_path(path).exists() else {}
    return texts, torch.from_numpy(vectors_of(table).copy()), meta


class BatchOrder:
    """Which rows each step trains on: epochs of seeded shuffles, fixed by the seed so a resumed run
    (or a benchmark) sees the same batches."""

    def __init__(self, rows: int, batch_size: int, epochs: float, rng: np.random.Generator):
        self.batch_size = batch_size
        self.total_steps = max(1, int(math.ceil(rows / batch_size) * epochs))
        self.order = rng.permutation(np.tile(np.arange(rows), math.ceil(epochs) + 1))

    def rows_at(self, step: int) -> list[int]:
        return self.order[step * self.batch_size : (step + 1) * self.batch_size].tolist()
