"""Opening what a command reads, checked: the one validation layer every command goes through.

Bad input must stop with one `error:` line that names the file, what is wrong with it and the
fix — never a traceback, and never a result computed from mismatched parts. So readers open
their files here:

    data = open_dataset(path, flag="--data", expect=ACTIVATIONS, columns=("doc_id",),
                        against="the NLA runs/nla", layer=nla.layer, d_model=nla.d_model,
                        target=nla.av_meta.base_checkpoint)   # format, columns, width, layer, target
    check_match("layer", "the run (--layer)", 10, "--data acts.parquet", 20, fix="drop --layer")
    with damaged_file(path, "a safetensors file"):           # weights, configs, tokenizers
        tensors = load_file(path)
    check_out_folder(out)                                     # --out is a folder, or not there yet

A layer, width or target that differs between two things used together is an NLAError
here (`check_match`); so is a file that is missing, foreign, cut short or damaged.
"""

from __future__ import annotations

import pickle
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import yaml
from safetensors import SafetensorError

from nla.atomic import read_yaml_mapping
from nla.errors import NLAError
from nla.layout import ACTIVATION_COLUMN, sidecar_path

ACTIVATIONS = "an activation split written by nla extract (e.g. runs/acts/validation.parquet)"
EXPLANATIONS = "a parquet written by nla explain-data (e.g. runs/acts/explanations-offline/ar_sft.parquet)"
VECTOR_COLUMN = ACTIVATION_COLUMN
# What reading a damaged, cut-short or foreign file raises (pyarrow's ArrowInvalid is a ValueError,
# safetensors' header errors are their own type, a bad JSON config is a ValueError). Caught only around
# the read itself, so a programming error elsewhere is not mistaken for a bad file.
DAMAGED = (OSError, ValueError, EOFError, SafetensorError, pa.ArrowException, yaml.YAMLError)
# What torch.load raises on a cut-short or foreign .pt (a bad zip archive, an unpicklable stream); only
# caught around loading a saved training state, where a RuntimeError can only come from its files.
STATE_DAMAGE = (RuntimeError, pickle.UnpicklingError)
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
RESUME_FIX = "pass --overwrite to start over (or restore the folder)"


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


@contextmanager
def damaged_file(path: str | Path, what: str, fix: str = "copy it again, or rerun the command that wrote it",
                 also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn what reading a damaged or foreign file raises (DAMAGED, plus `also`) into one NLAError naming it."""
    try:
        yield
    except (NLAError, *PATH_ERRORS):
        raise  # a missing file or a permission is not damage: the CLI names the file and its OS error
    except DAMAGED + also as err:
        raise NLAError(f"{path} cannot be read as {what} ({first_line(err)}); it is damaged, cut short or of "
                       f"another kind: {fix}") from err


# ---------------------------------------------------------------- two things used together


def _identity(name: str) -> tuple[str, str] | None:
    """How a target name compares: a folder that exists by its resolved path, a preset or hub id by its
    lower-cased name; a path that is not on this machine cannot be compared (None)."""
    path = Path(name).expanduser()
    if path.exists():
        return "path", str(path.resolve())
    if name.startswith(("/", ".", "~")) or "\\" in name:
        return None
    return "name", name.strip().lower()


def same_target(a: str, b: str) -> bool | None:
    """True or False when the two names can be compared; None when they cannot (a folder against a hub id,
    or a name like a test's "tiny" against a folder), so only a certain mismatch is refused."""
    ka, kb = _identity(str(a)), _identity(str(b))
    if ka is None or kb is None or ka[0] != kb[0]:
        return None
    return ka == kb


def check_match(quantity: str, a_label: str, a, b_label: str, b, *, fix: str) -> None:
    """One line when two things used together disagree on `quantity` (layer, d_model or target);
    nothing when either side does not say."""
    if a in (None, "") or b in (None, ""):
        return
    differ = same_target(a, b) is False if quantity == "target" else int(a) != int(b)
    if differ:
        raise NLAError(f"{a_label} has {quantity} {a} but {b_label} has {quantity} {b}; {fix}")


# ---------------------------------------------------------------- datasets


@dataclass
class Dataset:
    """A parquet split that passed open_dataset's checks, with its sidecar ({} when it has none)."""

    path: Path
    table: pa.Table
    meta: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.table.schema.field(VECTOR_COLUMN).type.list_size

    @property
    def layer(self) -> int | None:
        """K from the sidecar, else from the activation_layer column (None when neither says)."""
        layer = (self.meta.get("extraction") or {}).get("layer_index")
        if layer is not None:
            return int(layer)
        if "activation_layer" not in self.table.column_names:
            return None
        values = {v for v in self.table.column("activation_layer").to_pylist() if v is not None}
        if len(values) > 1:
            raise NLAError(f"{self.path} mixes activations of layers {sorted(values)}; pass a split read at one "
                           "layer")
        return values.pop() if values else None

    @property
    def model(self) -> str | None:
        return (self.meta.get("extraction") or {}).get("base_model") or None

    def vectors(self):
        """(N, d) float32 torch tensor of the activation_vector column."""
        import torch

        return torch.from_numpy(vectors_of(self.table).copy())


def vectors_of(table: pa.Table) -> np.ndarray:
    """The activation column as an (N, d) float32 array."""
    column = table.column(ACTIVATION_COLUMN).combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)


def read_dataset_sidecar(parquet: Path) -> dict:
    sidecar = sidecar_path(parquet)
    if not sidecar.exists():
        return {}
    with damaged_file(sidecar, "a YAML sidecar", "restore it, or rerun the command that wrote the parquet"):
        meta = read_yaml_mapping(sidecar, "restore it, or rerun the command that wrote the parquet")
    if not isinstance(meta.get("extraction") or {}, dict):
        raise NLAError(f"{sidecar} has an extraction field that is not a mapping; restore the sidecar")
    return meta


def check_dataset_file(path: str | Path, *, flag: str = "--data", expect: str = ACTIVATIONS,
                       columns: tuple[str, ...] = ()) -> pa.Schema:
    """The cheap part of open_dataset (the parquet footer only), for checking every input before any work:
    it exists, is a parquet, and has fixed-size float activation vectors and the `columns` asked for."""
    import pyarrow.parquet as pq

    path = Path(path)
    label = f"{flag} {path}" if flag else str(path)
    if not path.exists():
        raise NLAError(f"{label} not found; pass {expect}")
    if path.is_dir():
        raise NLAError(f"{label} is a folder; pass {expect}")
    with damaged_file(label, "a parquet file", f"pass {expect}, or rerun the command that wrote it"):
        schema = pq.read_schema(path)
    missing = [c for c in dict.fromkeys((VECTOR_COLUMN, *columns)) if c not in schema.names]
    if missing:
        raise NLAError(f"{label} lacks column(s) {', '.join(missing)}; pass {expect}")
    kind = schema.field(VECTOR_COLUMN).type
    if not (pa.types.is_fixed_size_list(kind) and pa.types.is_floating(kind.value_type)):
        raise NLAError(f"{label} stores {VECTOR_COLUMN} as {kind}, not as fixed-size float vectors; pass {expect}")
    return schema


def open_dataset(path: str | Path, *, flag: str = "--data", expect: str = ACTIVATIONS,
                 columns: tuple[str, ...] = (), min_rows: int = 1, against: str = "",
                 layer: int | None = None, d_model: int | None = None, target: str | None = None) -> Dataset:
    """Read a dataset split and check it before any work: it is a parquet, has activation vectors of one
    width and the `columns` asked for, at least `min_rows` rows, a readable sidecar, and — where given —
    the `layer`, `d_model` and `target` of what it is used `against` (e.g. "the NLA runs/nla")."""
    import pyarrow.parquet as pq

    check_dataset_file(path, flag=flag, expect=expect, columns=columns)
    path = Path(path)
    label = f"{flag} {path}" if flag else str(path)
    with damaged_file(label, "a parquet file", f"pass {expect}, or rerun the command that wrote it"):
        table = pq.read_table(path)
    if table.num_rows < min_rows:
        raise NLAError(f"{label} has {table.num_rows} row(s), fewer than the {min_rows} needed; pass {expect}")
    data = Dataset(path, table, read_dataset_sidecar(path))
    fix = f"pass a split extracted from the same target at the same layer as {against}"
    check_match("d_model", label, data.width, against, d_model, fix=fix)
    check_match("layer", label, data.layer, against, layer, fix=fix)
    check_match("target", label, data.model, against, target, fix=fix)
    return data


# ---------------------------------------------------------------- outputs


def check_out_folder(path: str | Path | None, flag: str = "--out") -> None:
    """An output folder that is already a file stops here, before any work."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise NLAError(f"{flag} {path} is a file, not a folder; pass a folder path (it is created if missing)")
