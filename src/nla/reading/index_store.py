"""The audit index on disk: SQLite (FTS5) for the rows and their explanations, a raw fp16 matrix for activations.

    INDEX/index.json                        what the index was made with (NLA, target, layer, settings)
    INDEX/shard-00000-of-00002/rows.sqlite  one row per indexed position, an FTS5 table over explanations
    INDEX/shard-00000-of-00002/activations.f16   row i of `positions` (id i + 1) is row i of this matrix
    INDEX/shard-00000-of-00002/norms.f32    each row's squared norm (fp32), for cosines without a pass in fp32
    INDEX/shard-00000-of-00002/done.json    written last: the shard is complete

Each process of `nla index` writes its own shard; `open_index` reads them all as one table. Why this
store: no server, nothing to download (sqlite3 and FTS5 ship with Python), each shard an independent
writer, and an exact vector scan of 1M fp16 rows within a second on 2 cores (benchmarks/index_store.py
compares it with LanceDB and DuckDB). A chunk of documents is committed as one unit: its vectors are
appended and synced first, then its rows in one transaction; a resume truncates the matrix to the
committed rows, so a kill -9 anywhere loses or duplicates nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nla.atomic import write_bytes, write_json
from nla.errors import NLAError

INDEX_JSON, ROWS_DB, ACTIVATIONS, NORMS, DONE_JSON = ("index.json", "rows.sqlite", "activations.f16", "norms.f32",
                                                     "done.json")
# The columns of one indexed position, in the order they are stored (the activation lives in the matrix).
COLUMNS = ("doc_id", "source", "genre", "topic", "position", "role", "token", "context", "explanation",
           "score", "label", "flagged", "claims")
FILTERS = ("doc_id", "source", "genre", "topic", "role", "label")  # exact-match filters of nla search
INDEX_FIX = "rerun the same nla index command to finish or repair it, or pass --overwrite to build it again"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS positions (id INTEGER PRIMARY KEY, {", ".join(COLUMNS)});
CREATE VIRTUAL TABLE IF NOT EXISTS explanations USING fts5(explanation, content='positions', content_rowid='id');
CREATE TABLE IF NOT EXISTS documents (doc_id TEXT PRIMARY KEY, rows INTEGER);
"""


def shard_name(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}"


class ShardWriter:
    """Appends committed chunks to one shard; reopening it resumes after the last committed chunk."""

    def __init__(self, folder: Path, d_model: int):
        self.folder, self.d_model = Path(folder), d_model
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.folder / ROWS_DB)
        self.db.executescript(_SCHEMA)
        self.rows = self.db.execute("SELECT count(*) FROM positions").fetchone()[0]
        self.done = {doc for (doc,) in self.db.execute("SELECT doc_id FROM documents")}
        matrix = self.folder / ACTIVATIONS
        with matrix.open("ab") as f:  # vectors appended after the last commit belong to no row: drop them
            f.truncate(self.rows * d_model * 2)

    def commit(self, doc_ids: list[str], rows: list[dict], vectors: np.ndarray) -> None:
        """Store a chunk: rows (dicts of COLUMNS) and their vectors (len(rows), d), and mark its documents done
        (also those that gave no row, so a resume does not redo them)."""
        if len(rows) != len(vectors):
            raise ValueError("one vector per row")
        with (self.folder / ACTIVATIONS).open("ab") as f:
            f.write(np.ascontiguousarray(vectors, dtype=np.float16).tobytes())
            f.flush()
            os.fsync(f.fileno())
        ids = range(self.rows + 1, self.rows + 1 + len(rows))
        with self.db:  # one transaction: all of the chunk or none of it
            self.db.executemany(f"INSERT INTO positions (id, {', '.join(COLUMNS)}) VALUES (?{', ?' * len(COLUMNS)})",
                                [(i, *(_cell(r.get(c)) for c in COLUMNS)) for i, r in zip(ids, rows)])
            self.db.executemany("INSERT INTO explanations (rowid, explanation) VALUES (?, ?)",
                                [(i, r["explanation"]) for i, r in zip(ids, rows) if r.get("explanation")])
            counts = {d: 0 for d in doc_ids}
            for r in rows:
                counts[r["doc_id"]] += 1
            self.db.executemany("INSERT INTO documents VALUES (?, ?)", counts.items())
        self.rows += len(rows)
        self.done.update(doc_ids)

    def finish(self) -> None:
        """norms.f32 (squared row norms), then done.json: the shard's row count and activation sum (the index's
        mean is their ratio)."""
        total = np.zeros(self.d_model, dtype=np.float64)
        squared = np.zeros(self.rows, dtype=np.float32)
        for start, chunk in _chunks(self.matrix()):
            wide = chunk.astype(np.float64)
            total += wide.sum(axis=0)
            squared[start : start + len(chunk)] = (wide**2).sum(axis=1)
        write_bytes(self.folder / NORMS, squared.tobytes())
        write_json(self.folder / DONE_JSON, {"rows": self.rows, "documents": len(self.done),
                                             "activation_sum": total.tolist()})
        self.db.close()

    def matrix(self) -> np.ndarray:
        return _matrix(self.folder, self.rows, self.d_model)


def _cell(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _matrix(folder: Path, rows: int, d_model: int) -> np.ndarray:
    if rows == 0:
        return np.zeros((0, d_model), dtype=np.float16)
    # copy-on-write: torch can wrap it without a copy (nothing is ever written back)
    return np.memmap(folder / ACTIVATIONS, dtype=np.float16, mode="c", shape=(rows, d_model))


def _chunks(matrix: np.ndarray, size: int = 65536):
    for start in range(0, len(matrix), size):
        yield start, np.asarray(matrix[start : start + size])


@dataclass
class Shard:
    folder: Path
    db: sqlite3.Connection
    vectors: np.ndarray  # (rows, d) fp16, memory-mapped
    squared_norms: np.ndarray  # (rows,) fp32
    activation_sum: np.ndarray


class Index:
    """Every shard of a finished index, read as one table (a hit names its shard and row)."""

    def __init__(self, folder: Path, settings: dict, shards: list[Shard]):
        self.folder, self.settings, self.shards = folder, settings, shards

    @property
    def rows(self) -> int:
        return sum(len(s.vectors) for s in self.shards)

    def mean_activation(self) -> np.ndarray:
        return sum(s.activation_sum for s in self.shards) / max(self.rows, 1)

    def close(self) -> None:
        for shard in self.shards:
            shard.db.close()


def read_settings(folder: Path) -> dict | None:
    path = Path(folder) / INDEX_JSON
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NLAError(f"{path} is damaged ({err}); pass --overwrite to nla index to build the index again") from err


def open_index(folder: str | Path) -> Index:
    """A finished index, or a one-line error saying what is missing or damaged and how to fix it."""
    folder = Path(folder).expanduser()
    settings = read_settings(folder) if folder.is_dir() else None
    if settings is None:
        raise NLAError(f"{folder} is not an nla index (no {INDEX_JSON}); build one with nla index --out {folder}")
    world, d_model = settings["processes"], settings["d_model"]
    shards = []
    for rank in range(world):
        shard = folder / shard_name(rank, world)
        if not (shard / DONE_JSON).exists():
            raise NLAError(f"{folder} is unfinished: {shard.name} is not complete; {INDEX_FIX}")
        try:
            done = json.loads((shard / DONE_JSON).read_text(encoding="utf-8"))
            db = sqlite3.connect(f"file:{shard / ROWS_DB}?mode=ro", uri=True, check_same_thread=False)
            stored = db.execute("SELECT count(*) FROM positions").fetchone()[0]
            size = (shard / ACTIVATIONS).stat().st_size
            squared = np.fromfile(shard / NORMS, dtype=np.float32)
        except (OSError, ValueError, KeyError, sqlite3.Error) as err:
            raise NLAError(f"{shard} is damaged ({str(err).splitlines()[0]}); {INDEX_FIX}") from err
        if stored != done["rows"] or size != stored * d_model * 2 or len(squared) != stored:
            raise NLAError(f"{shard} is damaged ({stored} rows, {size} bytes of activations, {done['rows']} "
                           f"expected); {INDEX_FIX}")
        shards.append(Shard(shard, db, _matrix(shard, stored, d_model), squared, np.asarray(done["activation_sum"])))
    return Index(folder, settings, shards)
