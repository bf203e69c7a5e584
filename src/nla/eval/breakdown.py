"""The parts of `nla eval`'s report that break the figure down or read the text: FVE by position bucket, by
activation norm and by genre (with their plots), the per-row table, and readability (quote precision and
perplexity under the plain target)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nla.atomic import atomic_path
from nla.autoencoder.nla import NLA
from nla.errors import NLAError
from nla.eval.metrics import Baseline, summary
from nla.eval.readability import perplexity, quote_precision
from nla.inputs import damaged_file
from nla.layout import CONTEXT_COLUMN


def readability(nla: NLA, records: list[dict], table, rows: int = 64) -> dict:
    """Quote precision against each row's context, and perplexity under the plain target next to the
    warm-start texts the AV was trained on (when that file is still there)."""
    texts = [r["text"] for r in records]
    result = {"quotes": quote_precision(texts, table.column(CONTEXT_COLUMN).to_pylist())
              if CONTEXT_COLUMN in table.column_names else {"skipped": f"no {CONTEXT_COLUMN} column"}}
    target = nla.target()
    written, start = [t for t in texts if t][:rows], warm_start_texts(nla, rows)
    with nla.role("target"):  # adapters off: the plain target
        if written:
            result["perplexity"] = perplexity(target.model, target.tokenizer, written)
        if start:
            result["warm_start_perplexity"] = perplexity(target.model, target.tokenizer, start)
    return result


def warm_start_texts(nla: NLA, rows: int) -> list[str] | None:
    """The first explanations the AV was trained on, when that file is still where its sidecar says."""
    warm = [Path(p) for p in nla.av_meta.trained_on if Path(p).is_file()]
    if not warm:
        return None
    with damaged_file(warm[0], "a parquet file", "restore the warm-start explanations the AV was trained on, "
                      "or move them away to skip their perplexity"):
        if "explanation" not in pq.read_schema(warm[0]).names:
            return None
        return pq.read_table(warm[0], columns=["explanation"]).column("explanation").to_pylist()[:rows]


def fve_by_bucket(values: np.ndarray, errors: dict[str, np.ndarray], reference: Baseline, buckets: int) -> dict:
    """FVE per quantile bucket of `values` (position or norm), against the one held-out denominator B."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, buckets + 1)))
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        members = which == b
        if members.any():
            lo, hi = values[members].min(), values[members].max()
            rows.append({"bucket": f"{lo:.4g}-{hi:.4g}", "rows": int(members.sum()),
                         **{name: summary(e[members], reference)["fve"] for name, e in errors.items()}})
    return {"buckets": rows}


def fve_by_genre(table: pa.Table, errors: dict[str, np.ndarray], reference: Baseline) -> dict:
    """FVE per corpus genre (chats apart from documents), against the one held-out denominator B; a split
    without corpus labels has none."""
    if "genre" not in table.column_names:
        return {"skipped": "the split has no genre column"}
    sources = table.column("source").to_pylist() if "source" in table.column_names else [""] * table.num_rows
    labels = np.array([f"{g or 'unlabelled'}{' (chat)' if str(s).endswith('chat') else ''}"
                       for g, s in zip(table.column("genre").to_pylist(), sources)])
    rows = [{"genre": label, "rows": int((labels == label).sum()),
             **{name: summary(e[labels == label], reference)["fve"] for name, e in errors.items()}}
            for label in sorted(set(labels))]
    return {"genres": sorted(rows, key=lambda r: -r["rows"])}


def write_rows(path: Path, table: pa.Table, norms: np.ndarray, errors: dict[str, np.ndarray],
               explained: dict[str, list[dict]]) -> None:
    columns = {"doc_id": table.column("doc_id"), "position": table.column("position"),
               "token": table.column("token"), "norm": pa.array(norms, type=pa.float32())}
    columns.update({f"mse_{name}": pa.array(e, type=pa.float32()) for name, e in errors.items()})
    columns["explanation"] = pa.array([r["text"] for r in explained["nla"]], type=pa.string())
    columns["explanation_tokens"] = pa.array([r["num_tokens"] for r in explained["nla"]], type=pa.int32())
    columns["shuffled_av_explanation"] = pa.array([r["text"] for r in explained["shuffled_av"]], type=pa.string())
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


def write_plots(out: Path, by: dict[str, dict], row_count: int) -> dict:
    """The two bucket plots, or a note saying why and how to get them."""
    from nla.eval import plots

    try:
        plots.require_matplotlib()
    except NLAError as err:
        return {"skipped": str(err)}
    written = {}
    for key, label in (("position", "token position"), ("norm", "activation norm")):
        rows = by[key]["buckets"]
        series = {name: [r[name] for r in rows] for name in rows[0] if name not in ("bucket", "rows")}
        path = out / f"fve_by_{key}.png"
        plots.bucket_plot(path, [r["bucket"] for r in rows], series, title=f"FVE by {label} ({row_count} rows)",
                          xlabel=f"{label} bucket", ylabel="FVE", kind="bar")
        written[key] = str(path)
    return written
