"""`nla extract`: turn a corpus into an activation dataset.

    nla extract --out runs/acts                      # default model and corpus
    nla extract --model gemma3-270m --layer 12 --corpus my.jsonl --out runs/gemma

Per document: tokenize (chat transcripts through the target's chat template), sample
positions (>= min_position, never a special token, RNG keyed on seed and doc id),
cut the document after its last sampled position, run blocks 0..K only, keep the
vectors at the sampled positions. Work is done in chunks of documents, each written
atomically under OUT/.partial/, so a killed run resumes where it stopped. At the end
one parquet per split (plus sidecar), config.yaml and summary.json are written;
summary.json is written last and marks the output complete.

`--overwrite` of a finished extraction builds the new one beside it (.OUT.overwrite/, which
a killed overwrite resumes from) and swaps the two folders at the end: until then the old
output stays whole, and with it goes everything made from it inside OUT (explanations-*/).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from nla.atomic import atomic_path, old_copy, swap_folder, write_json, write_yaml
from nla.changes import changed_settings, describe_changes
from nla.data.config import ExtractConfig
from nla.data.corpus import Document, load_corpus
from nla.data.dataset import rows_to_table, schema, write_sidecar
from nla.data.norms import norm_stats, suggest_injection_scale
from nla.data.sampling import SPLITS, assign_split, sample_positions
from nla.errors import NLAError
from nla.inputs import vectors_of
from nla.layout import CONFIG, CONTEXT_COLUMN, SUMMARY
from nla.models import Target, load_target
from nla.models.activations import batched_residual_stream

log = logging.getLogger(__name__)

PARTIAL = ".partial"


@dataclass
class PlannedDocument:
    doc: Document
    token_ids: list[int]  # cut after the last sampled position
    positions: list[int]
    split: str


def encode_document(target: Target, doc: Document, max_tokens: int) -> list[int]:
    """Token ids as the target sees the document: chat transcripts through its chat template."""
    if doc.is_chat:
        ids = target.encode(target.render_chat(list(doc.messages)), rendered_chat=True)
    else:
        ids = target.encode(doc.text)
    return ids[:max_tokens]


def plan_documents(target: Target, docs: list[Document], cfg: ExtractConfig) -> tuple[list[PlannedDocument], int]:
    """Tokenize, sample positions and assign splits; returns the plan and the count of skipped short documents."""
    planned, too_short = [], 0
    special = target.special_ids
    for doc in docs:
        ids = encode_document(target, doc, cfg.max_doc_tokens)
        positions = sample_positions(ids, doc.doc_id, special_ids=special, min_position=cfg.min_position,
                                     per_doc=cfg.positions_per_doc, seed=cfg.seed)
        if not positions:
            too_short += 1
            continue
        split = assign_split(doc.doc_id, cfg.seed, cfg.splits)
        planned.append(PlannedDocument(doc, ids[: positions[-1] + 1], positions, split))
    return planned, too_short


def extract_chunk(target: Target, chunk: list[PlannedDocument], layer: int, batch_tokens: int, on_batch=None):
    """Activations at every planned position of `chunk`, as a table (rows in document order)."""
    vectors: dict[int, np.ndarray] = {}
    for indices, hidden in batched_residual_stream(target, [p.token_ids for p in chunk], layer, batch_tokens):
        for row, i in enumerate(indices):
            vectors[i] = hidden[row, chunk[i].positions].numpy()  # (n_positions, d)
        if on_batch:
            on_batch(sum(len(chunk[i].token_ids) for i in indices))
    columns: dict[str, list] = {name: [] for name in (
        "doc_id", "position", "n_raw_tokens", "activation_layer", "token_id", "token",
        CONTEXT_COLUMN, "source", "genre", "topic", "split")}
    decode = target.tokenizer.decode
    for i, p in enumerate(chunk):
        for pos in p.positions:
            columns["doc_id"].append(p.doc.doc_id)
            columns["position"].append(pos)
            columns["n_raw_tokens"].append(pos + 1)
            columns["activation_layer"].append(layer)
            columns["token_id"].append(p.token_ids[pos])
            columns["token"].append(decode([p.token_ids[pos]]))
            columns[CONTEXT_COLUMN].append(decode(p.token_ids[: pos + 1]))
            columns["source"].append(p.doc.source)
            columns["genre"].append(p.doc.genre)
            columns["topic"].append(p.doc.topic)
            columns["split"].append(p.split)
    return rows_to_table(np.concatenate([vectors[i] for i in range(len(chunk))]), columns, target.d_model)


def _refuse_finished_output(cfg: ExtractConfig) -> None:
    if cfg.out.exists() and not cfg.out.is_dir():
        raise NLAError(f"--out {cfg.out} is a file; pass a folder path")
    if (cfg.out / SUMMARY).exists() and not cfg.overwrite:
        derived = derived_outputs(cfg.out)
        also = f" (and {', '.join(derived)}, made from it)" if derived else ""
        raise NLAError(f"{cfg.out} already holds an extraction; pass --overwrite to replace it{also}, or choose "
                       "another --out")


def _plan_key(planned: list[PlannedDocument], target: Target) -> str:
    """What the chunks were computed from: documents, positions, splits and the model's dtype."""
    plan = [(p.doc.doc_id, len(p.token_ids), p.positions, p.split) for p in planned]
    return hashlib.sha256(json.dumps([str(target.model.dtype), plan]).encode()).hexdigest()[:16]


def staging_folder(out: Path) -> Path:
    """Where an --overwrite of a finished extraction is built, beside it (a kill resumes there)."""
    return out.with_name(f".{out.name}.overwrite")


def _recover_swap(out: Path) -> None:
    """A kill between the two renames of the final swap leaves OUT missing and the new output whole in staging."""
    staging = staging_folder(out)
    if not out.exists() and (staging / SUMMARY).exists():
        os.replace(staging, out)
    shutil.rmtree(old_copy(out), ignore_errors=True)


def derived_outputs(out: Path) -> list[str]:
    """Folders inside an extraction that later stages made from it (explanations-*/); extraction writes none."""
    return sorted(f"{p.name}/" for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def _work_folder(cfg: ExtractConfig) -> Path:
    """OUT itself, or, to overwrite a finished extraction, its staging folder (the old output stays whole)."""
    staging = staging_folder(cfg.out)
    if cfg.overwrite and (cfg.out / SUMMARY).exists():
        return staging
    shutil.rmtree(staging, ignore_errors=True)  # an abandoned overwrite: OUT is worked on in place now
    if cfg.overwrite and cfg.out.is_dir():  # an unfinished output: nothing in it is finished, so nothing to keep
        for name in derived_outputs(cfg.out):
            shutil.rmtree(cfg.out / name)
    return cfg.out


def _prepare_partial(cfg: ExtractConfig, work: Path, plan_key: str) -> Path:
    """The folder of finished chunks: kept when its settings and plan match (resume), else refused or reset."""
    partial = work / PARTIAL
    settings_file = partial / "settings.json"
    if cfg.overwrite:
        # From here on an output in the work folder no longer counts as finished: a kill cannot leave a mix.
        (work / SUMMARY).unlink(missing_ok=True)
    for stale in [*work.glob(".*.tmp-*"), *partial.glob(".*.tmp-*")]:
        stale.unlink()  # temp files of writes that a kill interrupted
    current = json.loads(json.dumps({**cfg.settings(), "plan": plan_key}))  # as it reads back from JSON
    if settings_file.exists():
        saved = json.loads(settings_file.read_text())
        if changed_settings(saved, current) and not cfg.overwrite:
            raise NLAError(f"{cfg.out} holds an unfinished extraction with other settings "
                           f"({describe_changes(saved, current)}); rerun with the same settings and corpus to "
                           "resume, or pass --overwrite to start over")
        if changed_settings(saved, current):
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_json(settings_file, current)
    return partial


def _finalize(cfg: ExtractConfig, work: Path, target: Target, layer: int, partial: Path, chunk_files: list[Path],
              counts: dict) -> dict:
    """Merge chunks into one parquet per split (in the work folder), with sidecars, config.yaml and (last)
    summary.json.

    Streams one chunk at a time into five open writers, so memory stays at one chunk.
    """
    split_rows = dict.fromkeys(SPLITS, 0)
    norms, genres = [], {}
    with ExitStack() as stack:
        writers = {}
        for split in SPLITS:
            tmp = stack.enter_context(atomic_path(work / f"{split}.parquet"))
            # Entered after its temp path, so each writer closes before that file is renamed.
            writers[split] = stack.enter_context(pq.ParquetWriter(tmp, schema(target.d_model)))
        for path in chunk_files:
            table = pq.read_table(path)
            for split in SPLITS:
                part = table.filter(pc.equal(table["split"], split))
                writers[split].write_table(part)
                split_rows[split] += part.num_rows
            norms.append(np.linalg.norm(vectors_of(table), axis=1))
            for source, genre in zip(table["source"].to_pylist(), table["genre"].to_pylist()):
                genres[f"{source}/{genre}"] = genres.get(f"{source}/{genre}", 0) + 1
    extraction = {
        "base_model": cfg.model, "d_model": target.d_model, "layer_index": layer, "norm": "none",
        "corpus": cfg.corpus, "corpus_slice": f"0:{cfg.max_docs}" if cfg.max_docs else "all",
        "positions_per_doc": cfg.positions_per_doc, "min_position": cfg.min_position, "seed": cfg.seed,
        "max_doc_tokens": cfg.max_doc_tokens,
    }
    for split in SPLITS:
        write_sidecar(work / f"{split}.parquet", split=split, row_count=split_rows[split], extraction=extraction,
                      dataset_id=f"{Path(cfg.model).name}-L{layer}-{cfg.fingerprint()}-{split}")
    stats = norm_stats(np.concatenate(norms))
    summary = {
        "model": cfg.model, "layer": layer, "d_model": target.d_model, **counts,
        "rows": stats["count"], "rows_per_split": split_rows,
        "activation_norm": stats, "suggested_injection_scale": suggest_injection_scale(stats["mean"]),
        "rows_per_source_genre": dict(sorted(genres.items())),
    }
    write_yaml(work / CONFIG, {**asdict(cfg), "out": str(cfg.out), "resolved_layer": layer})
    write_json(work / SUMMARY, summary)  # last: marks the output complete
    shutil.rmtree(partial, ignore_errors=True)
    return summary


def extract(cfg: ExtractConfig, *, progress: bool = True) -> dict:
    """Run (or resume) an extraction; returns the summary also written to OUT/summary.json."""
    _recover_swap(cfg.out)
    _refuse_finished_output(cfg)
    docs = load_corpus(cfg.corpus, text_field=cfg.text_field, limit=cfg.max_docs)
    target = load_target(cfg.model, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    layer = target.resolve_layer(cfg.layer)
    _check_context(cfg, target)
    planned, too_short = plan_documents(target, docs, cfg)
    if not planned:
        raise NLAError(f"no document in {cfg.corpus} has a usable position at or after --min-position "
                       f"{cfg.min_position} ({too_short} too short); lower --min-position or use longer documents")
    work = _work_folder(cfg)  # only now: bad input above leaves nothing behind
    partial = _prepare_partial(cfg, work, _plan_key(planned, target))
    chunks = [planned[i : i + cfg.chunk_docs] for i in range(0, len(planned), cfg.chunk_docs)]
    chunk_files = [partial / f"chunk-{index:05d}.parquet" for index in range(len(chunks))]
    total_tokens = sum(len(p.token_ids) for p in planned)
    resumed = sum(len(p.token_ids) for chunk, f in zip(chunks, chunk_files) if f.exists() for p in chunk)
    bar = tqdm(total=total_tokens, initial=resumed, unit="tok", unit_scale=True, desc=f"extracting layer {layer}",
               disable=not progress)
    start, computed = time.time(), 0
    for chunk, path in zip(chunks, chunk_files):
        if path.exists():  # finished before a kill
            continue
        table = extract_chunk(target, chunk, layer, cfg.batch_tokens, on_batch=bar.update)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        computed += sum(len(p.token_ids) for p in chunk)
    bar.close()
    seconds = time.time() - start
    counts = {
        "documents": len(docs), "documents_used": len(planned), "documents_skipped_too_short": too_short,
        "tokens": total_tokens, "tokens_computed_this_run": computed, "seconds": round(seconds, 2),
        "tokens_per_second": round(computed / seconds, 1) if seconds > 0 and computed else None,
    }
    summary = _finalize(cfg, work, target, layer, partial, chunk_files, counts)
    if work != cfg.out:
        _replace(cfg.out, work)
    return summary


def _check_context(cfg: ExtractConfig, target: Target) -> None:
    """Documents are cut at --max-doc-tokens; past the target's context its activations mean nothing, so a cut
    beyond it is refused before any work."""
    context = target.context_length
    if context is not None and cfg.max_doc_tokens > context:
        raise NLAError(f"--max-doc-tokens {cfg.max_doc_tokens} is more than the {context} tokens of "
                       f"{target.name}'s context; pass --max-doc-tokens {context} or less")


def _replace(out: Path, staging: Path) -> None:
    """Swap the finished new extraction in for the old one, and with the old one what was made from it."""
    derived = derived_outputs(out)
    swap_folder(staging, out)
    if derived:
        log.info(f"replaced the extraction in {out}; removed what was made from the old one: {', '.join(derived)}")
