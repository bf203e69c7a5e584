"""The search page of `nla serve --index DIR` and its API (reading/search.py behind both).

    GET  /search                 the page: a query box, both signals, hits with their context; a hit opens its reading
    POST /api/search             {query, by, against, centre, docs, k, per_doc, filters, min_score} -> {query, hits}
    POST /api/search/reading     {row} -> the stored position and the AV's reading of its stored activation

The same checks as the other endpoints (body size, field shapes, then the query itself), model work on the one
model thread, and every error a JSON {"error": ...} with a 4xx status.
"""

from __future__ import annotations

import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from nla.reading.index_store import FILTERS, Index
from nla.reading.search import SearchQuery, check_same_nla, search, stored_row
from nla.reading.trace import Reader, TraceSettings

MAX_HITS = 100  # hits one request may ask for
MARK_OPEN, MARK_CLOSE = "⟦", "⟧"  # how the index marks the token in its context


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=2000, description="What to look for, in words.")
    by: str = Field("both", description="text, activation or both.")
    against: str | None = Field(None, max_length=2000, description="A contrast query (activation signal).")
    centre: bool = Field(False, description="Compare activations relative to the index's mean.")
    docs: bool = Field(False, description="Rank documents instead of positions.")
    k: int = Field(20, ge=1, le=MAX_HITS, description="Hits to return.")
    per_doc: int = Field(8, ge=1, le=1000, description="Positions a document's score averages.")
    filters: dict[str, str] = Field(default_factory=dict, description=f"Exact matches on {', '.join(FILTERS)}.")
    min_score: float | None = Field(None, description="Only readings scoring at least this (1 - MSE/B).")


class ReadingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    row: int = Field(ge=0, description="A hit's row in the index.")


def read_stored(reader: Reader, index: Index, row: int, settings: TraceSettings) -> dict:
    """The stored position and a fresh reading of its stored activation (its context split at the token)."""
    stored, vector = stored_row(index, row)
    before, _, rest = stored["context"].partition(MARK_OPEN)
    token, _, after = rest.partition(MARK_CLOSE)
    reading = reader.read_vectors(torch.from_numpy(vector)[None], [before + token], [after], settings)[0]
    return {"row": row, "stored": stored, "reading": {**reading, "position": stored["position"]}}


def add_search_routes(app: FastAPI, reader: Reader, index: Index | None, worker, settings: TraceSettings,
                      page) -> None:
    """Register the search page and API; without an index they answer 404 naming the flag."""
    if index is not None:
        check_same_nla(index, reader.nla)  # at start-up, not at the first query

    def opened() -> Index:
        if index is None:
            raise HTTPException(404, "no index is open; start the server with nla serve --index DIR")
        return index

    @app.get("/search", include_in_schema=False)
    async def search_page():
        return HTMLResponse(page("search.html"))

    @app.post("/api/search", summary="Rank an index's positions or documents by a query (text, activation, both)")
    async def search_index(body: SearchBody):
        q = SearchQuery(query=body.query, by=body.by, against=body.against, centre=body.centre, docs=body.docs,
                        k=body.k, per_doc=body.per_doc, filters=body.filters, min_score=body.min_score)
        return await worker.run(search, opened(), reader.nla, q)

    @app.post("/api/search/reading", summary="A hit's stored position and the AV's reading of its activation")
    async def hit_reading(body: ReadingBody):
        return await worker.run(read_stored, reader, opened(), body.row, settings)
