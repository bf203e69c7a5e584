"""(explanation, activation) pairs: what `nla explain-data` writes and the SFT stages read."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml

from nla.data.dataset import sidecar_path, vectors_of
from nla.errors import NLAError


def read_pairs(path: Path) -> tuple[list[str], torch.Tensor, dict]:
    """Explanations, their activations (N, d) fp32, and the dataset sidecar (empty if there is none)."""
    if not path.exists():
        raise NLAError(f"{path} not found; run nla explain-data first and pass one of its parquet files")
    table = pq.read_table(path)
    if "explanation" not in table.column_names:
        raise NLAError(f"{path} has no explanation column; pass the output of nla explain-data")
    meta = yaml.safe_load(sidecar_path(path).read_text()) if sidecar_path(path).exists() else {}
    return table.column("explanation").to_pylist(), torch.from_numpy(vectors_of(table).copy()), meta
