"""`nla index`: run the target once per document and store, per indexed position, its activation, and with
--explain its reading, for `nla search` (reading/search.py) to rank.

    nla index --corpus chats.jsonl --roles assistant --out runs/audit               # activations only
    nla index --corpus chats.jsonl --explain 4 --out runs/audit-explained           # + 4 readings a document
    torchrun --nproc-per-node 8 -m nla.cli index --corpus big.jsonl --out runs/big  # one shard per process

Each process takes the documents whose hash falls in its share (disjoint and the same whatever the order)
and writes its own shard (reading/index_store.py), chunk by chunk, so a killed run resumes where it stopped.
Positions are sampled as extraction samples them (seed and document id), among the tokens of the chosen
roles; explained positions are sampled among those again.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nla.atomic import write_json
from nla.autoencoder.nla import NLA
from nla.autoencoder.shipped import resolve as resolve_shipped
from nla.changes import changed_settings, describe_changes
from nla.data.corpus import Document, load_corpus
from nla.data.extract import encode_document
from nla.data.roles import TEXT, token_roles
from nla.data.sampling import _key, sample_positions
from nla.errors import NLAError
from nla.models.activations import batched_residual_stream
from nla.reading.config import DEFAULT_NLA, IndexSettings, TraceSettings
from nla.reading.index_store import DONE_JSON, INDEX_JSON, ShardWriter, read_settings, shard_name
from nla.reading.trace import Reader, display_name

CONTEXT_BEFORE, CONTEXT_AFTER = 24, 6  # tokens of context stored around an indexed token
CHUNK_DOCS = 16  # documents per committed chunk (what a kill can cost)


@dataclass
class PlannedDoc:
    doc: Document
    ids: list[int]
    roles: list[str]
    positions: list[int]  # indexed
    explained: list[int]  # of those, the ones the AV reads


def process_share() -> tuple[int, int]:
    """(rank, world) of this process under torchrun / accelerate launch (their RANK and WORLD_SIZE), else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def in_share(doc_id: str, rank: int, world: int) -> bool:
    return _key(0, "index-share", doc_id) % world == rank


def plan_document(reader: Reader, doc: Document, settings: IndexSettings) -> PlannedDoc:
    target = reader.target
    ids = encode_document(target, doc, settings.max_doc_tokens)
    if doc.is_chat:
        rendered = target.render_chat(list(doc.messages))
        full = len(target.encode(rendered, rendered_chat=True))
        roles = token_roles(target.tokenizer, rendered, list(doc.messages), full)[: len(ids)]
    else:
        roles = [TEXT] * len(ids)
    special = target.special_ids
    allowed = [i for i in range(settings.min_position, len(ids))
               if roles[i] in settings.roles and ids[i] not in special]
    positions = _sample(allowed, doc.doc_id, settings.positions, settings.seed)
    explained = [] if settings.explain == "none" else _sample(positions, doc.doc_id + "|explain", settings.explain,
                                                             settings.seed)
    return PlannedDoc(doc, ids, roles, positions, explained)


def _sample(candidates: list[int], key: str, count: str, seed: int) -> list[int]:
    """All candidates, or `count` of them drawn as extraction draws positions (keyed on seed and document)."""
    if count == "all":
        return candidates
    picked = sample_positions(candidates, key, special_ids=frozenset(), min_position=0, per_doc=int(count),
                              seed=seed)
    return [candidates[i] for i in picked]  # sample_positions draws indices into the list it is given


def context_window(tokenizer, ids: list[int], position: int) -> str:
    """The text around a token with the token marked: ...before⟦token⟧after..."""
    before = tokenizer.decode(ids[max(0, position - CONTEXT_BEFORE) : position])
    after = tokenizer.decode(ids[position + 1 : position + 1 + CONTEXT_AFTER])
    return f"{before}⟦{tokenizer.decode([ids[position]])}⟧{after}"


def index_rows(reader: Reader, plan: PlannedDoc, readings: dict[int, dict]) -> list[dict]:
    tokenizer, doc = reader.target.tokenizer, plan.doc
    rows = []
    for p in plan.positions:
        reading = readings.get(p, {})
        claims = [{"text": c["text"], "weight": c["weight"],
                   "flagged": [q["text"] for q in c["quotes"] if q["flagged"]]} for c in reading.get("claims", [])]
        rows.append({"doc_id": doc.doc_id, "source": doc.source, "genre": doc.genre, "topic": doc.topic,
                     "position": p, "role": plan.roles[p], "token": reader.target.token_text(plan.ids[p]),
                     "context": context_window(tokenizer, plan.ids, p), "explanation": reading.get("explanation"),
                     "score": reading.get("score"), "label": reading.get("label"),
                     "flagged": sum(len(c["flagged"]) for c in claims) if reading else None,
                     "claims": claims if reading else None})
    return rows


def index_chunk(reader: Reader, chunk: list[PlannedDoc], layer: int, trace: TraceSettings,
                batch_tokens: int) -> tuple[list[dict], np.ndarray]:
    """The rows and fp16 vectors of a chunk's documents: one batched forward through block K, then the AV's
    readings of the explained positions, batched across the chunk's documents."""
    wanted = [p for p in chunk if p.positions]
    vectors: dict[int, torch.Tensor] = {}
    sequences = [p.ids[: p.positions[-1] + 1] for p in wanted]
    with reader.nla.role("target"):
        for indices, hidden in batched_residual_stream(reader.target, sequences, layer, batch_tokens):
            for row, i in enumerate(indices):
                vectors[i] = hidden[row, wanted[i].positions]
    readings = read_explained(reader, wanted, vectors, trace)
    rows = [row for i, plan in enumerate(wanted) for row in index_rows(reader, plan, readings[i])]
    stacked = torch.cat([vectors[i] for i in range(len(wanted))]) if wanted else torch.zeros(0, reader.nla.d_model)
    return rows, stacked.numpy().astype(np.float16)


def read_explained(reader: Reader, wanted: list[PlannedDoc], vectors: dict[int, torch.Tensor],
                   trace: TraceSettings) -> list[dict[int, dict]]:
    """Per document, position -> reading of its explained positions, in batches that span documents."""
    tokenizer = reader.target.tokenizer
    todo = [(i, p, vectors[i][plan.positions.index(p)]) for i, plan in enumerate(wanted) for p in plan.explained]
    readings: list[dict[int, dict]] = [{} for _ in wanted]
    for start in range(0, len(todo), trace.batch_size):
        batch = todo[start : start + trace.batch_size]
        records = reader.read_vectors(torch.stack([v for _, _, v in batch]),
                                      [tokenizer.decode(wanted[i].ids[: p + 1]) for i, p, _ in batch],
                                      [tokenizer.decode(wanted[i].ids[p + 1 :]) for i, p, _ in batch], trace)
        for (i, p, _), record in zip(batch, records):
            readings[i][p] = {**record, "position": p}
    return readings


def load_index_reader(nla: str | Path, settings: IndexSettings, *, model: str | None = None,
                      device: str = "auto", dtype: str = "auto") -> Reader:
    """The NLA and target to index with; the calibration (the score's B and labels) only when explaining."""
    if settings.explain != "none":
        return Reader.load(nla, model=model, device=device, dtype=dtype, max_new_tokens=settings.max_new_tokens,
                           progress=True)
    path = resolve_shipped(nla)
    loaded = NLA.load(path, device=device, dtype=dtype)
    return Reader(loaded, loaded.target(model, device=device, dtype=dtype), None, display_name(str(path)))


def nla_spec(reader: Reader) -> str:
    """How `nla search` finds the index's NLA again: "default" for the shipped one, else its absolute folder."""
    run = reader.nla.source.run if reader.nla.source else None
    if run is None:
        return reader.nla.source.label if reader.nla.source else reader.name
    return DEFAULT_NLA if Path(run).resolve() == resolve_shipped(DEFAULT_NLA).resolve() else str(Path(run).resolve())


def index_settings_record(reader: Reader, settings: IndexSettings, world: int) -> dict:
    """index.json: the NLA, target and layer with the settings and the process count (what a rerun must match)."""
    return {"schema": "nla.index", "schema_version": 1, "nla": nla_spec(reader), "target": reader.target.name,
            "layer": reader.nla.layer, "d_model": reader.nla.d_model,
            "av_created_at": reader.nla.av_meta.created_at, "ar_created_at": reader.nla.ar_meta.created_at,
            "processes": world, **asdict(settings), "roles": list(settings.roles)}


def check_index_out(out: Path, record: dict | None, overwrite: bool) -> None:
    """Refuse an --out that is a file, a finished index, or an unfinished one made with other settings."""
    if out.exists() and not out.is_dir():
        raise NLAError(f"--out {out} is a file; pass a folder for the index")
    saved = read_settings(out) if out.is_dir() else None
    if saved is None or overwrite or record is None:
        return
    if changed_settings(saved, record):
        raise NLAError(f"{out} holds an index made with other settings ({describe_changes(saved, record)}); rerun "
                       "with the same settings to resume it, pass --overwrite to rebuild it, or choose another --out")
    shards = [out / shard_name(r, saved["processes"]) / DONE_JSON for r in range(saved["processes"])]
    if all(s.exists() for s in shards):
        raise NLAError(f"{out} already holds a finished index; pass --overwrite to rebuild it, or choose another --out")


def build_index(reader: Reader, settings: IndexSettings, out: Path, *, overwrite: bool = False,
                batch_tokens: int = 8192, batch_size: int = 32, progress: bool = True) -> dict:
    """Index this process's share of the corpus into OUT/<its shard>; returns the shard's counts."""
    rank, world = process_share()
    record = index_settings_record(reader, settings, world)
    check_index_out(out, record, overwrite)
    docs = load_corpus(settings.corpus, text_field=settings.text_field, limit=settings.max_docs)
    _check_roles(docs, settings)
    if overwrite:
        _clear(out, rank, world)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / INDEX_JSON, record)  # every process writes the same record
    writer = ShardWriter(out / shard_name(rank, world), reader.nla.d_model)
    todo = [d for d in docs if in_share(d.doc_id, rank, world) and d.doc_id not in writer.done]
    trace = TraceSettings(max_new_tokens=settings.max_new_tokens, batch_size=batch_size)
    bar = tqdm(total=len(todo), unit="doc", desc=f"index {shard_name(rank, world)}", disable=not progress)
    start, positions = time.time(), 0
    for begin in range(0, len(todo), CHUNK_DOCS):
        chunk = [plan_document(reader, d, settings) for d in todo[begin : begin + CHUNK_DOCS]]
        rows, vectors = index_chunk(reader, chunk, reader.nla.layer, trace, batch_tokens)
        writer.commit([p.doc.doc_id for p in chunk], rows, vectors)
        positions += len(rows)
        bar.update(len(chunk))
        bar.set_postfix_str(f"{positions / max(time.time() - start, 1e-9):.1f} positions/s")
    bar.close()
    writer.finish()
    seconds = time.time() - start
    return {"shard": shard_name(rank, world), "rows": writer.rows, "documents": len(writer.done),
            "positions_this_run": positions, "seconds": round(seconds, 2),
            "positions_per_second": round(positions / seconds, 1) if positions and seconds > 0 else None}


def _clear(out: Path, rank: int, world: int) -> None:
    """--overwrite: each process removes its own shard; the first also removes shards of another process count."""
    shutil.rmtree(out / shard_name(rank, world), ignore_errors=True)
    if rank == 0 and out.is_dir():
        for stale in out.glob("shard-*-of-*"):
            if not stale.name.endswith(f"-of-{world:05d}"):
                shutil.rmtree(stale, ignore_errors=True)


def _check_roles(docs: list[Document], settings: IndexSettings) -> None:
    chat_roles = set(settings.roles) - {TEXT}
    if chat_roles and TEXT not in settings.roles and not any(d.is_chat for d in docs):
        raise NLAError(f"--roles {','.join(settings.roles)} reads chat messages, but {settings.corpus} has no chats; "
                       "pass --roles text for plain documents, or a corpus of chat transcripts")
