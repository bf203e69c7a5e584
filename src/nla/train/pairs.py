"""(explanation, activation) pairs: what `nla explain-data` writes and the SFT stages read."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nla.atomic import atomic_path, write_yaml
from nla.autoencoder.meta import META_FILE, ModelMeta, read_model_meta
from nla.autoencoder.shared import trained
from nla.autoencoder.shipped import resolve as resolve_default
from nla.errors import NLAError
from nla.inputs import ACTIVATIONS, EXPLANATIONS, Dataset, check_match, open_dataset, read_dataset_sidecar
from nla.layout import ADAPTER_DIRS, sidecar_path


def read_pairs(path: Path, text_column: str = "explanation") -> tuple[list[str], torch.Tensor, Dataset]:
    """Texts (by default the explanations), their activations (N, d) fp32, and the checked dataset (its
    sidecar, layer and model)."""
    data = open_dataset(path, flag="--data", expect=EXPLANATIONS if text_column == "explanation" else ACTIVATIONS)
    table = data.table
    if text_column not in table.column_names:
        fix = "pass the output of nla explain-data" if text_column == "explanation" else \
            "pass an activation dataset split (it has detokenized_text_truncated) or another --text-column"
        raise NLAError(f"{path} has no {text_column} column; {fix}")
    texts = table.column(text_column).to_pylist()
    if any(t is None for t in texts):
        raise NLAError(f"{path} has empty {text_column} values; drop those rows or pick another --text-column")
    return texts, data.vectors(), data


def write_text_pairs(table: pa.Table, texts: list[str | None], source: Path, dest: Path) -> Path:
    """DEST: the rows of `table` (read from `source`) that have a text, `explanation` now that text (the
    table's own kept as warm_explanation), with the source's sidecar and its row count, so train-ar and
    train-av read the data's model and layer. A text of None (an answer without its closing tag) drops its
    row: no AR ever reads such an answer."""
    keep = [i for i, t in enumerate(texts) if t is not None]
    pairs = table.drop_columns([c for c in ("warm_explanation",) if c in table.column_names])
    pairs = pairs.append_column("warm_explanation", pairs.column("explanation"))
    pairs = pairs.set_column(pairs.column_names.index("explanation"), "explanation",
                             pa.array(texts, pa.string())).take(pa.array(keep, pa.int64()))
    return write_pairs(pairs, source, dest)


def write_pairs(pairs: pa.Table, source: Path, dest: Path) -> Path:
    """DEST: `pairs` as they are, with `source`'s sidecar (its row count updated) where it has one."""
    with atomic_path(dest) as tmp:
        pq.write_table(pairs, tmp)
    sidecar = read_dataset_sidecar(source)
    if sidecar:
        write_yaml(sidecar_path(dest), {**sidecar, "row_count": pairs.num_rows})
    return dest


class BatchOrder:
    """Which rows each step trains on: epochs of seeded shuffles, fixed by the seed so a resumed run
    (or a benchmark) sees the same batches."""

    def __init__(self, rows: int, batch_size: int, epochs: float, rng: np.random.Generator):
        self.batch_size = batch_size
        self.total_steps = max(1, int(math.ceil(rows / batch_size) * epochs))
        self.order = rng.permutation(np.tile(np.arange(rows), math.ceil(epochs) + 1))

    def rows_at(self, step: int) -> list[int]:
        return self.order[step * self.batch_size : (step + 1) * self.batch_size].tolist()


def sft_layer(layer: int | None, model: str | None, data: Dataset) -> int:
    """The layer an SFT stage trains at: --layer, else the data's. Both named and different, or neither
    named, is an error: an AV or AR labelled with another layer than its activations' is a wrong result."""
    check_match("layer", "the run (--layer)", layer, f"--data {data.path}", data.layer,
                fix="drop --layer to train at the data's layer, or pass data extracted at that layer")
    check_match("target", "the run (--model)", model, f"--data {data.path}", data.model,
                fix="drop --model to train on the data's model, or pass data extracted from that model")
    layer = layer if layer is not None else data.layer
    if layer is None:
        raise NLAError(f"--data {data.path} does not say which layer its activations were read at (no sidecar, "
                       "no activation_layer values); pass --layer")
    return int(layer)


def check_partner(out: Path, role: str, *, layer: int, d_model: int | None, target: str | None) -> None:
    """train-ar and train-av share a run folder: the other half already in it (`role`, merged or adapter)
    must read the same layer, width and target as the half being trained, or the pair is unusable."""

    for folder in (out / role, out / f"{role}_adapter"):
        if (folder / META_FILE).exists():
            meta = read_model_meta(folder)
            other = f"the {role.upper()} already in {folder}"
            fix = "train at its layer on data from its target, or pass another --out"
            check_match("layer", "this run", layer, other, meta.extraction_layer_index, fix=fix)
            check_match("d_model", "this run", d_model, other, meta.d_model, fix=fix)
            check_match("target", "this run", target, other, meta.base_checkpoint, fix=fix)


def sft_inputs(cfg, role: str, text_column: str = "explanation") -> tuple[list[str], torch.Tensor, str, int]:
    """What train-ar and train-av check before any work: the pairs, the target (--model, else the data's),
    the layer (sft_layer), the other half already in --out (check_partner), and no finished `role` there
    unless --overwrite. Returns (texts, activations, target, layer)."""

    texts, golds, data = read_pairs(cfg.data, text_column)
    model_spec = cfg.model or data.model
    if not model_spec:
        raise NLAError(f"{cfg.data} does not name its model; pass --model")
    layer = sft_layer(cfg.layer, cfg.model, data)
    partner = "av" if role == "ar" else "ar"
    check_partner(cfg.out, partner, layer=layer, d_model=golds.shape[1], target=model_spec)
    if trained(cfg.out, role) and not cfg.overwrite:
        raise NLAError(f"{cfg.out} already holds a trained {role.upper()}; pass --overwrite or another --out")
    return texts, golds, model_spec, layer


def warm_start(init_from: str, role: str, model_spec: str, layer: int, template: str) -> tuple[Path, ModelMeta]:
    """The `role` adapter folder of --init-from (an NLA folder, or default) and its sidecar, checked against
    this run's target, layer and prompt `template`: a warm start of another model or layer would train on
    vectors it never read, one of another prompt on text its weights never saw."""
    folder = resolve_default(init_from) / ADAPTER_DIRS[role]
    if not (folder / META_FILE).is_file() or read_model_meta(folder).role != role:
        raise NLAError(f"init-from {init_from}: {folder} holds no {role.upper()} adapter ({ADAPTER_DIRS[role]}/ "
                       f"with {META_FILE}); pass an NLA folder trained with LoRA, or default")
    meta = read_model_meta(folder)
    if meta.extraction_layer_index != layer or meta.base_checkpoint != model_spec:
        raise NLAError(f"init-from {init_from} is an {role.upper()} of {meta.base_checkpoint} at layer "
                       f"{meta.extraction_layer_index}, this data is of {model_spec} at layer {layer}; "
                       f"warm-start from an {role.upper()} of the same target and layer")
    if meta.prompt_templates.get(role) != template:
        raise NLAError(f"init-from {init_from}: its {role.upper()} reads another prompt template than nla's; "
                       f"warm-start from an {role.upper()} trained by nla train-{role}, or drop --init-from")
    return folder, meta
