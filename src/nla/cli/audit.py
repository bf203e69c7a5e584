"""Audit commands: index many transcripts, search them (reading/index.py, reading/search.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nla.cli.common import MODEL_HELP, READ_DEVICE_HELP, app, checked_dtype, opt_device, opt_dtype, user_errors
from nla.reading.config import DEFAULT_NLA, IndexSettings

INDEX = IndexSettings()
NLA_HELP = f"The NLA whose target, layer and AR the index uses. Default: the shipped NLA ({DEFAULT_NLA})."


@app.command("index")
@user_errors
def index(
    out: Path = typer.Option(..., help="The index folder (one shard per process; see nla search)."),
    corpus: str = typer.Option(INDEX.corpus, help="default, a .txt/.jsonl/.parquet file, or hf:NAME[:CONFIG][@SPLIT]."),
    text_field: str = typer.Option(INDEX.text_field, help="Field or column with the text (or chat messages)."),
    max_docs: Optional[int] = typer.Option(None, help="Index the first N documents."),
    nla: str = typer.Option(DEFAULT_NLA, "--nla", help=NLA_HELP),
    model: Optional[str] = typer.Option(None, help="The target; default: the NLA's. " + MODEL_HELP),
    positions: str = typer.Option(INDEX.positions, help="all, or N positions sampled per document (seeded)."),
    roles: str = typer.Option(",".join(INDEX.roles), help="Tokens to index: assistant, user, system (chat messages) "
                              "and text (plain documents), comma-separated."),
    explain: str = typer.Option(INDEX.explain, help="none (activations only: extraction speed), all, or N positions "
                                "a document that the AV explains, scores and claim-checks."),
    min_position: int = typer.Option(INDEX.min_position, help="Skip earlier positions (0 is an attention sink)."),
    max_doc_tokens: int = typer.Option(INDEX.max_doc_tokens, help="Cut longer documents."),
    seed: int = typer.Option(INDEX.seed, help="Seed of the position samples."),
    max_new_tokens: int = typer.Option(INDEX.max_new_tokens, help="Longest explanation (with --explain)."),
    batch_size: int = typer.Option(32, help="Positions explained together (on 2 cores the AV reaches 38% of the "
                                   "fp32 matmul peak at 32, 25% at 16)."),
    device: str = opt_device(help=READ_DEVICE_HELP),
    dtype: str = opt_dtype(),
    overwrite: bool = typer.Option(False, help="Rebuild an index already in --out."),
):
    """Store each document's activations (and with --explain, readings) for nla search. Runs under torchrun or
    accelerate launch unchanged: each process indexes its own share. A killed run resumes: rerun the command."""
    from nla.reading.index import build_index, check_index_out, load_index_reader

    settings = IndexSettings(corpus=corpus, text_field=text_field, max_docs=max_docs, positions=positions,
                             roles=tuple(r.strip() for r in roles.split(",") if r.strip()), explain=explain,
                             min_position=min_position, max_doc_tokens=max_doc_tokens, seed=seed,
                             max_new_tokens=max_new_tokens)
    check_index_out(out, None, overwrite)  # a file for --out fails before the models load
    reader = load_index_reader(nla, settings, model=model, device=device, dtype=checked_dtype(dtype))
    result = build_index(reader, settings, out, overwrite=overwrite, batch_size=batch_size)
    rate = f", {result['positions_per_second']} positions/s" if result["positions_per_second"] else ""
    typer.echo(f"indexed {result['rows']} positions of {result['documents']} documents into {out}/{result['shard']}"
               f" ({result['seconds']:.1f} s{rate})")


@app.command("search")
@user_errors
def search(
    index: Path = typer.Argument(..., help="An index folder written by nla index."),
    query: str = typer.Argument(..., help="What to look for, in words."),
    by: str = typer.Option("both", help="text (BM25 over explanations), activation (cosine with the AR's "
                           "reconstruction of the query) or both (rank fusion)."),
    against: Optional[str] = typer.Option(None, help="A contrast query: rank by AR(query) - AR(against)."),
    centre: bool = typer.Option(False, help="Compare activations relative to the index's mean activation."),
    docs: bool = typer.Option(False, "--docs", help="Rank documents (the mean of their best --per-doc positions)."),
    per_doc: int = typer.Option(8, help="Positions a document's score averages."),
    k: int = typer.Option(20, "--k", help="Hits to show."),
    doc: Optional[str] = typer.Option(None, "--doc", help="Only this document id."),
    source: Optional[str] = typer.Option(None, help="Only this source."),
    genre: Optional[str] = typer.Option(None, help="Only this genre."),
    role: Optional[str] = typer.Option(None, help="Only this role (assistant, user, system, text)."),
    label: Optional[str] = typer.Option(None, help="Only readings with this label (High, Medium, Low, failed)."),
    min_score: Optional[float] = typer.Option(None, help="Only readings scoring at least this (1 - MSE/B)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object {query, hits} instead of a table."),
    device: str = opt_device(help=READ_DEVICE_HELP),
    dtype: str = opt_dtype(),
):
    """Rank an index's positions (or documents) by a query: text match over explanations, activation similarity
    to the AR's reconstruction of the query, or both."""
    from nla.reading.index_store import open_index
    from nla.reading.search import SearchQuery, index_nla
    from nla.reading.search import search as run_search

    filters = {k: v for k, v in {"doc_id": doc, "source": source, "genre": genre, "role": role,
                                 "label": label}.items() if v is not None}
    q = SearchQuery(query=query, by=by, against=against, centre=centre, docs=docs, k=k, per_doc=per_doc,
                    filters=filters, min_score=min_score)
    opened = open_index(index)
    try:
        reader_nla = index_nla(opened, device=device, dtype=checked_dtype(dtype)) if by != "text" else None
        result = run_search(opened, reader_nla, q)
    finally:
        opened.close()
    typer.echo(json.dumps(result, ensure_ascii=False) if json_out else format_hits(result, docs=docs))


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def format_hits(result: dict, *, docs: bool = False) -> str:
    """A readable table, best first: scores, where, and the token marked in its context."""
    if not result["hits"]:
        return f"no hits for {result['query']!r} (loosen the filters, or try --by activation)"
    lines = [f"{'rank':>4} {'score':>8} {'text':>8} {'activ.':>8}  {'document':<24} {'pos':>4}  context"]
    for rank, hit in enumerate(result["hits"], start=1):
        context = " ".join(hit["context"].split())
        where = f"{hit['positions']}p" if docs else str(hit["position"])
        lines.append(f"{rank:>4} {hit['score']:>8.4f} {_short(hit['text_score']):>8} "
                     f"{_short(hit['activation_score']):>8}  {hit['doc_id'][:24]:<24} {where:>4}  {context}")
        if hit.get("explanation"):
            lines.append(f"{'':>56}{' '.join(hit['explanation'].split())[:160]}")
    note = "documents: the mean of their best positions per signal" if docs else "positions"
    return "\n".join(lines + [f"{len(result['hits'])} {note}; score: rank fusion of text and activation (one signal "
                               "alone: its own score)"])
