"""`nla search`: rank an audit index's positions, or its documents, by what a query asks about.

    nla search runs/audit "the ocean" --docs                 # documents, both signals
    nla search runs/audit "the ocean" --by activation --against "a plain chat" --role assistant

Two signals, shown apart and combined:
- text: BM25 (SQLite FTS5) of the query's words over the stored explanations (an index made with --explain).
  Each shard keeps its own term statistics, so a multi-process index scores a word by its shard's counts.
- activation: the cosine between each stored activation and the AR's reconstruction of the query, the NLA's own
  way to ask where the model thinks about it (no generation, so it works on --explain none indexes). With
  --against the direction is AR(query) - AR(other query); with --centre both sides are taken relative to the
  index's mean activation.
Combined: reciprocal-rank fusion, 1/(60 + text rank) + 1/(60 + activation rank), ranks over every row that
passes the filters (a row the text does not match has no text rank and adds nothing for it).
A document's score for a signal is the mean of its best `per_doc` position scores (positions the text does not
match count 0), and documents are fused the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from nla.autoencoder.nla import NLA, ar_input_ids
from nla.autoencoder.shipped import resolve as resolve_shipped
from nla.errors import NLAError
from nla.models.adapters import adapter_for
from nla.reading.index_store import COLUMNS, FILTERS, Index, Shard

BY = ("text", "activation", "both")
FUSION_K = 60  # the usual constant of reciprocal-rank fusion
EXACT_ROWS = 262_144  # shards up to this many rows are scanned in fp32 (under a second on 2 cores)


@dataclass
class SearchQuery:
    query: str
    by: str = "both"
    against: str | None = None
    centre: bool = False
    docs: bool = False
    k: int = 20
    per_doc: int = 8
    filters: dict = field(default_factory=dict)  # column -> exact value, among FILTERS
    min_score: float | None = None  # positions whose reading scored at least this (explained positions only)

    def __post_init__(self):
        if not self.query.strip():
            raise NLAError("the query is empty; pass the words to search for")
        if self.by not in BY:
            raise NLAError(f"--by {self.by}: choose text, activation or both")
        if self.k < 1 or self.per_doc < 1:
            raise NLAError("--k and --per-doc must be at least 1")
        unknown = sorted(set(self.filters) - set(FILTERS))
        if unknown:
            raise NLAError(f"cannot filter on {', '.join(unknown)}; filters: {', '.join(FILTERS)}")


def fts_query(text: str) -> str | None:
    """The query's words as an FTS5 OR-query of quoted terms (no FTS syntax from the user reaches SQLite)."""
    words = re.findall(r"\w+", text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words)) or None


def _where(q: SearchQuery) -> tuple[str, list]:
    clauses, values = [], []
    for column, value in sorted(q.filters.items()):
        clauses.append(f"{column} = ?")
        values.append(value)
    if q.min_score is not None:
        clauses.append("score >= ?")
        values.append(q.min_score)
    return (" AND ".join(clauses) or "1"), values


def row_mask(shard: Shard, q: SearchQuery) -> np.ndarray:
    """Which rows of a shard pass the filters (row i is id i + 1)."""
    mask = np.zeros(len(shard.vectors), dtype=bool)
    if not q.filters and q.min_score is None:
        mask[:] = True
        return mask
    where, values = _where(q)
    ids = [i for (i,) in shard.db.execute(f"SELECT id FROM positions WHERE {where}", values)]
    mask[np.asarray(ids, dtype=np.int64) - 1] = True
    return mask


def text_scores(shard: Shard, q: SearchQuery, mask: np.ndarray) -> np.ndarray:
    """-BM25 of each row's explanation (higher is better); NaN where the text does not match."""
    scores = np.full(len(shard.vectors), np.nan)
    match = fts_query(q.query)
    if match is None:
        return scores
    found = np.array(shard.db.execute("SELECT rowid, bm25(explanations) FROM explanations WHERE explanations "
                                      "MATCH ?", (match,)).fetchall(), dtype=np.float64).reshape(-1, 2)
    rows = found[:, 0].astype(np.int64) - 1
    keep = mask[rows]
    scores[rows[keep]] = -found[keep, 1]
    return scores


def query_direction(nla: NLA, q: SearchQuery, mean: np.ndarray | None) -> torch.Tensor:
    """AR(query), minus AR(against) or the index mean when asked: the direction activations are compared to."""
    if nla is None:
        raise NLAError("activation search needs the index's NLA (its AR reads the query)")
    texts = [q.query] + ([q.against] if q.against else [])
    limit = getattr(nla.reconstructor.backbone.config, "max_position_embeddings", None)
    requires_bos = adapter_for(nla.reconstructor.backbone.config).requires_bos
    rows = ar_input_ids(nla.ar_tokenizer, texts, nla.ar_meta.prompt_templates["ar"], requires_bos)
    if limit and max(len(r) for r in rows) > limit:
        raise NLAError(f"the query has {max(len(r) for r in rows)} tokens in the AR's template, more than its "
                       f"context of {limit}; shorten it")
    predicted = nla.reconstruct(texts)
    if q.against:
        return predicted[0] - predicted[1]
    return predicted[0] - torch.as_tensor(mean, dtype=torch.float32) if mean is not None else predicted[0]


def activation_scores(shard: Shard, direction: torch.Tensor, mean: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """Cosine of each row's activation (less the index mean with --centre) with the direction; NaN if filtered.

    One pass over the stored matrix gives a . u and a . m for the unit direction u and the unit mean m; with the
    stored squared norms, |a - mean|^2 = |a|^2 - 2 a . mean + |mean|^2. Up to EXACT_ROWS rows the pass runs in
    fp32 (exact); a larger shard is read through torch's fp16 matmul, ~30x faster on a CPU than a cast to fp32
    (1M rows: 0.09 s against 3 s), with cosines good to about 1e-3 (its products are rounded to fp16)."""
    unit = direction.float() / direction.float().norm().clamp_min(1e-12)
    centre = torch.zeros_like(unit) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
    scale = centre.norm()
    basis = torch.stack([unit, centre / scale.clamp_min(1e-12)], dim=1)  # (d, 2), both of norm 1
    dots = _products(shard.vectors, basis)
    along, with_mean = dots[:, 0] - float(centre @ unit), dots[:, 1] * scale
    squared = torch.from_numpy(shard.squared_norms) - 2 * with_mean + scale**2
    out = (along / squared.clamp_min(1e-12).sqrt()).numpy()
    out[~mask] = np.nan
    return out


def _products(vectors: np.ndarray, basis: torch.Tensor) -> torch.Tensor:
    """(rows, 2) fp32: the stored fp16 rows times the basis."""
    if len(vectors) > EXACT_ROWS:
        return (torch.from_numpy(vectors) @ basis.half()).float()
    out = torch.empty(len(vectors), basis.shape[1])
    for start in range(0, len(vectors), 65536):
        out[start : start + 65536] = torch.from_numpy(vectors[start : start + 65536].astype(np.float32)) @ basis
    return out


def ranks(scores: np.ndarray) -> np.ndarray:
    """1 for the best score, 2 for the next...; equal scores share the best of their ranks (so the order rows are
    stored in never breaks a tie); inf where there is no score (NaN)."""
    present = ~np.isnan(scores)
    out = np.full(len(scores), np.inf)
    descending = np.sort(-scores[present])
    out[present] = np.searchsorted(descending, -scores[present], side="left") + 1
    return out


def fused(text: np.ndarray | None, activation: np.ndarray | None) -> np.ndarray:
    """Reciprocal-rank fusion of the signals given (NaN where a row passes no filter)."""
    parts = [1.0 / (FUSION_K + ranks(s)) for s in (text, activation) if s is not None]
    total = np.sum(parts, axis=0)
    present = [~np.isnan(s) for s in (text, activation) if s is not None]
    total[~np.any(present, axis=0)] = np.nan
    return total


def search(index: Index, nla: NLA | None, q: SearchQuery) -> dict:
    """{"query", "hits"}: the k best positions (or documents with q.docs), best first."""
    explained = index.settings.get("explain", "none") != "none"
    if q.by == "text" and not explained:
        raise NLAError(f"{index.folder} holds no explanations (built with --explain none); search --by activation, "
                       "or rebuild the index with --explain all or --explain N")
    masks = [row_mask(s, q) for s in index.shards]
    text = np.concatenate([text_scores(s, q, m) for s, m in zip(index.shards, masks)]) \
        if q.by != "activation" and explained else None
    activation = None
    if q.by != "text":
        mean = index.mean_activation() if q.centre else None
        direction = query_direction(nla, q, mean)
        activation = np.concatenate([activation_scores(s, direction, mean, m)
                                     for s, m in zip(index.shards, masks)])
    signals = {"text": text, "activation": activation}
    if q.docs:
        return {"query": q.query, "hits": _document_hits(index, q, signals)}
    score = _final(signals)
    return {"query": q.query, "hits": [_position_hit(index, g, score, signals) for g in _best(score, q.k)]}


def _final(signals: dict) -> np.ndarray:
    """The ranking score: the one signal asked for, or the fusion of both."""
    present = [s for s in signals.values() if s is not None]
    return present[0] if len(present) == 1 else fused(signals["text"], signals["activation"])


def _best(score: np.ndarray, k: int) -> list[int]:
    """The k best-scored entries, best first (NaN: filtered out)."""
    return [int(i) for i in np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:k] if not np.isnan(score[i])]


def _locate(index: Index, g: int) -> tuple[Shard, int]:
    for shard in index.shards:
        if g < len(shard.vectors):
            return shard, g
        g -= len(shard.vectors)
    raise IndexError(g)


def _row(shard: Shard, local: int) -> dict:
    values = shard.db.execute(f"SELECT {', '.join(COLUMNS)} FROM positions WHERE id = ?", (int(local) + 1,)).fetchone()
    row = dict(zip(COLUMNS, values))
    row["claims"] = json.loads(row["claims"]) if row["claims"] else None
    return row


def _value(scores: np.ndarray | None, i: int) -> float | None:
    return None if scores is None or np.isnan(scores[i]) else float(scores[i])


def _position_hit(index: Index, g: int, score: np.ndarray, signals: dict) -> dict:
    shard, local = _locate(index, g)
    row = _row(shard, local)
    return {"doc_id": row["doc_id"], "row": int(g), "score": float(score[g]),
            "text_score": _value(signals["text"], g),
            "activation_score": _value(signals["activation"], g), "position": row["position"], "token": row["token"],
            "context": row["context"], "explanation": row["explanation"], "role": row["role"],
            "reading_score": row["score"], "label": row["label"], "source": row["source"], "genre": row["genre"]}


def _doc_ids(index: Index) -> np.ndarray:
    return np.asarray([d for s in index.shards for (d,) in s.db.execute("SELECT doc_id FROM positions ORDER BY id")],
                      dtype=object)


def _document_hits(index: Index, q: SearchQuery, signals: dict) -> list[dict]:
    """Documents ranked by the mean of their best q.per_doc position scores, per signal, then fused."""
    docs = _doc_ids(index)
    passing = ~np.all([np.isnan(s) for s in signals.values() if s is not None], axis=0)
    names = sorted(set(docs[passing]))
    where = {name: [] for name in names}
    for g in np.flatnonzero(passing):
        where[docs[g]].append(g)
    per_doc = {}
    for key, scores in signals.items():
        if scores is not None:
            filled = np.nan_to_num(scores, nan=0.0) if key == "text" else scores
            per_doc[key] = np.array([_top_mean(filled[where[n]], q.per_doc) for n in names])
            if key == "text":  # a document none of whose explanations matches has no text rank at all
                per_doc[key][[bool(np.isnan(scores[where[n]]).all()) for n in names]] = np.nan
    score = _final({k: per_doc.get(k) for k in ("text", "activation")})
    hits = []
    for i in _best(score, q.k):
        rows = where[names[i]]
        lead = signals["activation"] if signals["activation"] is not None else signals["text"]
        top = max(rows, key=lambda g: np.nan_to_num(lead[g], nan=-np.inf))
        best = _row(*_locate(index, top))
        hits.append({"doc_id": names[i], "row": int(top), "score": float(score[i]),
                     "text_score": _value(per_doc.get("text"), i),
                     "activation_score": _value(per_doc.get("activation"), i), "positions": len(rows),
                     "position": best["position"], "token": best["token"], "context": best["context"],
                     "explanation": best["explanation"], "source": best["source"], "genre": best["genre"]})
    return hits


def _top_mean(values: np.ndarray, count: int) -> float:
    values = values[~np.isnan(values)]
    return float(np.sort(values)[-count:].mean()) if len(values) else float("nan")


def stored_row(index: Index, row: int) -> tuple[dict, np.ndarray]:
    """A stored position (its columns) and its activation, by its row number in the whole index (a hit's "row")."""
    if not 0 <= row < index.rows:
        raise NLAError(f"row {row} is outside the index's {index.rows} rows")
    shard, local = _locate(index, row)
    return _row(shard, local), np.asarray(shard.vectors[local], dtype=np.float32)


def index_nla(index: Index, *, device: str = "auto", dtype: str = "auto") -> NLA:
    """The NLA the index was made with (its AR reads the query)."""
    nla = NLA.load(resolve_shipped(index.settings["nla"]), device=device, dtype=dtype)
    check_same_nla(index, nla)
    return nla


def check_same_nla(index: Index, nla: NLA) -> None:
    """Refuse an NLA other than the index's (other weights, layer or width): its AR's queries would mean nothing."""
    stamps = (nla.av_meta.created_at, nla.ar_meta.created_at)
    if stamps != (index.settings.get("av_created_at"), index.settings.get("ar_created_at")):
        raise NLAError(f"{index.folder} was made with another NLA ({index.settings['nla']}, trained at another time); "
                       "search it with that NLA, or rebuild the index with nla index --overwrite")
    if nla.layer != index.settings["layer"] or nla.d_model != index.settings["d_model"]:
        raise NLAError(f"the NLA reads layer {nla.layer} (d_model {nla.d_model}), but {index.folder} holds layer "
                       f"{index.settings['layer']}; rebuild the index with this NLA")
