"""The activation-dataset format: a parquet of raw vectors plus a `{parquet}.nla_meta.yaml` sidecar.

Columns (one row per sampled token position):
    activation_vector            FixedSizeList<float32>[d], RAW (never normalised)
    doc_id, position             where the activation came from; n_raw_tokens = position + 1
    activation_layer             K, the decoder block whose output this is
    token_id, token              the token at the position
    detokenized_text_truncated   the decoded context up to and including that token
    source, genre, topic         corpus labels of the document
    split                        ar_sft | av_sft | rl | validation | test (by document)
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nla.atomic import write_yaml
from nla.layout import ACTIVATION_COLUMN, CONTEXT_COLUMN, sidecar_path

STRING_COLUMNS = ("doc_id", "token", CONTEXT_COLUMN, "source", "genre", "topic", "split")
INT_COLUMNS = {"position": pa.int32(), "n_raw_tokens": pa.int32(), "activation_layer": pa.int16(),
               "token_id": pa.int32()}
# Splits map to the reference's dataset stages; held-out splits are plain extractions.
STAGE_OF_SPLIT = {"ar_sft": "ar_sft", "av_sft": "av_sft", "rl": "rl", "validation": "base", "test": "base"}


def schema(d_model: int) -> pa.Schema:
    fields = [pa.field(ACTIVATION_COLUMN, pa.list_(pa.float32(), d_model))]
    fields += [pa.field(name, kind) for name, kind in INT_COLUMNS.items()]
    fields += [pa.field(name, pa.string()) for name in STRING_COLUMNS]
    return pa.schema(fields)


def rows_to_table(vectors: np.ndarray, columns: dict[str, list], d_model: int) -> pa.Table:
    """Build a table from (N, d) float32 vectors and the other columns as lists."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, d_model)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    arrays = [pa.FixedSizeListArray.from_arrays(flat, d_model)]
    sch = schema(d_model)
    arrays += [pa.array(columns[f.name], type=f.type) for f in list(sch)[1:]]
    return pa.Table.from_arrays(arrays, schema=sch)


def write_sidecar(parquet: Path, *, dataset_id: str, split: str, row_count: int, extraction: dict) -> None:
    write_yaml(sidecar_path(parquet), {
        "kind": "nla_dataset",
        "schema_version": 1,
        "dataset_id": dataset_id,
        "stage": STAGE_OF_SPLIT[split],
        "split": split,
        "row_count": row_count,
        "extraction": extraction,
        # Filled in by later stages, once a verbalizer's marker and prompts exist.
        "tokens": None,
        "prompt_templates": None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def read_dataset(parquet: str | Path) -> pa.Table:
    return pq.read_table(parquet)
