"""`nla explain-data`: warm-start explanations for the SFT splits of an activation dataset.

    nla explain-data --dataset runs/acts            # offline explainer, ar_sft and av_sft splits
    nla explain-data --dataset runs/acts --explainer anthropic   # an API model (see explainers/api.py)

For every row it rebuilds the exact context the activation came from (the corpus and
model named in the dataset's config.yaml, re-tokenised and checked against the stored
token ids), asks the target for its most likely next tokens there, and has an
explainer write the explanation. Output: OUT/{split}.parquet = the split's columns plus
`explanation`, with a sidecar; rows the explainer failed on are dropped and counted.
Each split file is written atomically, finished splits are skipped on a rerun, and
summary.json (written last) marks the output complete; a later call with the same settings
may add other splits to a complete folder. API answers are also cached
one by one in OUT/.cache/, so a split cut short by a kill or an outage resumes
without repeating calls.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nla.atomic import atomic_path, read_yaml_mapping, write_json, write_yaml
from nla.data.corpus import document_text, load_corpus
from nla.data.extract import CONFIG, SUMMARY, encode_document
from nla.data.sampling import SPLITS
from nla.errors import NLAError
from nla.explainers.api import (
    CACHE_FILE,
    INSTRUCTION_VERSION,
    ApiExplainer,
)
from nla.explainers.base import Explainer, ExplainRequest
from nla.explainers.config import ExplainDataConfig
from nla.explainers.offline import OfflineExplainer
from nla.explainers.salient import SalientWords, system_words
from nla.inputs import check_dataset_file, damaged_file, open_dataset
from nla.layout import CONTEXT_COLUMN, sidecar_path
from nla.models import Target, load_target
from nla.models.predictions import next_token_candidates

log = logging.getLogger(__name__)
# What each row's context is rebuilt from, and the keys of DATASET/config.yaml that rebuild it.
CONTEXT_COLUMNS = ("doc_id", "position", "token_id", "token", CONTEXT_COLUMN, "source", "genre",
                   "topic")
EXTRACT_KEYS = ("model", "corpus", "text_field", "max_docs", "max_doc_tokens", "dtype")
SPLIT_FILE = "a split written by nla extract (--splits names ar_sft, av_sft, rl, validation or test)"


def _api_explainer(cfg: ExplainDataConfig, progress: bool) -> ApiExplainer:
    return ApiExplainer(cfg.explainer, model=cfg.api_model, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                        cache_path=cfg.out / CACHE_FILE, concurrency=cfg.concurrency, max_retries=cfg.max_retries,
                        progress=progress)


# name -> factory(cfg, progress); API backends need their settings, the offline one none.
EXPLAINERS = {"offline": lambda cfg, progress: OfflineExplainer(), "anthropic": _api_explainer,
              "openai": _api_explainer}


def quote_window(ids: list[int], quote_tokens: int, special: frozenset[int]) -> list[int]:
    """The last `quote_tokens` ids, cut after the last special token among them. A chat's <|im_end|> is the
    EOS the AV stops at: an AV taught to quote it ends its answer inside the quote (10% of answers, measured),
    and a quote that skipped it would no longer be a substring of the context."""
    window = ids[max(0, len(ids) - quote_tokens) :]
    cut = max((i for i, t in enumerate(window) if t in special), default=-1)
    return window[cut + 1 :]


def _salient(words: SalientWords | None, doc, context: str, k: int) -> dict:
    """The request's salient words: up to 3 of a chat's own system prompt, then k of the context."""
    if words is None:
        return {}
    named = system_words(words, doc.messages, context, min(3, k))
    return {"system_words": named, "salient": words.top(context, k, exclude=named)}


def _requests(target: Target, table: pa.Table, docs: dict, cfg: ExplainDataConfig, max_doc_tokens: int,
              salient: SalientWords | None, progress: str | None = None) -> list[ExplainRequest]:
    rows = table.select(list(CONTEXT_COLUMNS)).to_pylist()
    by_doc: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_doc.setdefault(row["doc_id"], []).append(i)
    doc_ids = list(by_doc)
    sequences = []
    for doc_id in doc_ids:
        if doc_id not in docs:
            raise NLAError(f"document {doc_id} of the dataset is not in its corpus any more; "
                           "explain with the corpus the activations were extracted from")
        sequences.append(encode_document(target, docs[doc_id], max_doc_tokens))
    positions = [[rows[i]["position"] for i in by_doc[d]] for d in doc_ids]
    for doc_id, ids, pos in zip(doc_ids, sequences, positions):
        stored = [rows[i]["token_id"] for i in by_doc[doc_id]]
        if [ids[p] if p < len(ids) else None for p in pos] != stored:
            raise NLAError(f"document {doc_id} no longer tokenises as it did at extraction (corpus or tokenizer "
                           "changed); re-extract, or explain with the original corpus and model")
    cut = [ids[: max(p) + 1] for ids, p in zip(sequences, positions)]
    candidates = next_token_candidates(target, cut, positions, k=cfg.top_k, batch_tokens=cfg.batch_tokens,
                                       progress=progress)
    requests: list[ExplainRequest | None] = [None] * len(rows)
    for doc_id, ids, per_position in zip(doc_ids, sequences, candidates):
        for i, top in zip(by_doc[doc_id], per_position):
            row = rows[i]
            end = row["position"] + 1
            quote = target.tokenizer.decode(quote_window(ids[:end], cfg.quote_tokens, target.special_ids))
            context = row[CONTEXT_COLUMN]
            requests[i] = ExplainRequest(
                row_id=f"{doc_id}:{row['position']}", context=context, token=row["token"], source=row["source"],
                genre=row["genre"], topic=row["topic"], next_tokens=tuple(top), quote=quote,
                **_salient(salient, docs[doc_id], context, cfg.salient_words))
    return requests


def _explain_split(cfg: ExplainDataConfig, split: str, target: Target, docs: dict, explainer: Explainer,
                   extract_cfg: dict, progress: bool, salient: SalientWords | None = None) -> dict:
    source = cfg.dataset / f"{split}.parquet"
    data = open_dataset(source, flag="--dataset", expect=SPLIT_FILE, columns=CONTEXT_COLUMNS,
                        against=f"{cfg.dataset / CONFIG}", layer=extract_cfg.get("resolved_layer"),
                        target=extract_cfg["model"])
    table = data.table
    requests = _requests(target, table, docs, cfg, extract_cfg["max_doc_tokens"], salient,
                         progress=f"{split}: the target's next tokens" if progress else None)
    explanations = explainer.explain(requests)
    usage = getattr(explainer, "usage", {})  # API backends count requests, cache hits, retries and tokens
    keep = [i for i, text in enumerate(explanations) if text]
    # The facts behind each explanation travel with it (claim checks and format studies read them).
    facts = {"explanation": pa.array([explanations[i] for i in keep], pa.string()),
             "quote": pa.array([requests[i].quote for i in keep], pa.string()),
             "next_tokens": pa.array([[t for t, _ in requests[i].next_tokens] for i in keep], pa.list_(pa.string())),
             "next_probs": pa.array([[p for _, p in requests[i].next_tokens] for i in keep], pa.list_(pa.float32()))}
    explained = table.take(keep)
    for name, column in facts.items():
        explained = explained.append_column(name, column)
    with atomic_path(cfg.out / f"{split}.parquet") as tmp:
        pq.write_table(explained, tmp)
    meta = dict(data.meta)
    about = {"explainer": explainer.name, "top_k": cfg.top_k, "quote_tokens": cfg.quote_tokens,
             "salient_words": cfg.salient_words}
    if usage:
        about.update(model=explainer.model, instruction_version=INSTRUCTION_VERSION)
    meta.update(row_count=explained.num_rows, explanations=about)
    write_yaml(sidecar_path(cfg.out / f"{split}.parquet"), meta)
    counts = {"rows": table.num_rows, "explained": len(keep), "failed": table.num_rows - len(keep), **usage}
    if usage:
        log.info(f"{split}: {usage['api_requests']} API requests, {usage['cache_hits']} cache hits, "
                 f"{usage['retries']} retries, {counts['failed']} failed; "
                 f"tokens in {usage['input_tokens']}, out {usage['output_tokens']}")
    return counts


def read_extract_config(dataset: Path) -> dict:
    """DATASET/config.yaml, the settings the activations were extracted with (the corpus and model to rebuild
    each context from)."""
    path, fix = dataset / CONFIG, "rerun nla extract into that folder"
    if not path.is_file():
        raise NLAError(f"{path} not found; {fix}")
    with damaged_file(path, "a YAML config", fix):
        config = read_yaml_mapping(path, fix)
    missing = [key for key in EXTRACT_KEYS if key not in config]
    if missing:
        raise NLAError(f"{path} lacks {', '.join(missing)}; it is not the config of an nla extract: {fix}")
    return config


# The settings that shape an explanation: a split added to a finished folder must share them with the others.
SAME_SETTINGS = ("dataset", "explainer", "top_k", "quote_tokens", "salient_words", "api_model")


def finished_splits(cfg: ExplainDataConfig) -> dict:
    """The splits a finished --out already holds (their counts), when this call only adds others with the same
    settings; {} for a new folder. Anything else is refused before any work: nothing to add, or other settings."""
    path = cfg.out / SUMMARY
    if not path.exists():
        return {}
    with damaged_file(path, "a JSON summary", "pass --overwrite to write the folder again"):
        old = json.loads(path.read_text())
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    held, recorded = old.get("splits", {}), old.get("config", {})
    asked = {**asdict(cfg), "dataset": str(cfg.dataset)}
    if set(cfg.splits) <= set(held):
        raise NLAError(f"{cfg.out} already holds explanations of {', '.join(cfg.splits)}; pass --overwrite to "
                       "replace them, or another --out")
    differ = [f"{key} {recorded.get(key)} -> {asked[key]}" for key in SAME_SETTINGS if recorded.get(key) != asked[key]]
    if differ:
        raise NLAError(f"{cfg.out} holds explanations written with other settings ({'; '.join(differ)}); add "
                       "splits with its own settings, or pass --overwrite to replace them all, or another --out")
    return held


def explain_data(cfg: ExplainDataConfig, *, progress: bool = True) -> dict:
    """Write explanations for the chosen splits; returns the summary also written to OUT/summary.json."""
    if not (cfg.dataset / SUMMARY).exists():
        raise NLAError(f"{cfg.dataset} is not a finished extraction (no {SUMMARY}); run nla extract first")
    finished = {} if cfg.overwrite else finished_splits(cfg)
    extract_cfg = read_extract_config(cfg.dataset)
    for split in cfg.splits:  # every split checked before minutes of model work
        check_dataset_file(cfg.dataset / f"{split}.parquet", flag="--dataset", expect=SPLIT_FILE,
                           columns=CONTEXT_COLUMNS)
    explainer = EXPLAINERS[cfg.explainer](cfg, progress)  # first: a missing key or SDK stops before any work
    target = load_target(extract_cfg["model"], device=cfg.device, dtype=extract_cfg["dtype"])
    docs = {d.doc_id: d for d in load_corpus(extract_cfg["corpus"], text_field=extract_cfg["text_field"],
                                             limit=extract_cfg["max_docs"])}
    if cfg.overwrite:
        # The old output goes first (the API cache stays): a kill mid-way leaves no old split beside new ones.
        # Every split a folder can hold goes, not only those its summary names: a damaged summary is replaced too.
        (cfg.out / SUMMARY).unlink(missing_ok=True)
        for split in {*SPLITS, *cfg.splits}:
            sidecar_path(cfg.out / f"{split}.parquet").unlink(missing_ok=True)
            (cfg.out / f"{split}.parquet").unlink(missing_ok=True)
    # the corpus's document frequencies, counted once for every split
    salient = SalientWords(document_text(d) for d in docs.values()) if cfg.salient_words else None
    counts = dict(finished)
    for number, split in enumerate(cfg.splits, start=1):
        if split in finished:
            continue  # explained by an earlier call with the same settings
        log.info(f"explaining split {number}/{len(cfg.splits)}: {split} ({cfg.explainer})")
        done = cfg.out / f"{split}.parquet"
        if done.exists() and sidecar_path(done).exists() and not cfg.overwrite:
            counts[split] = {"rows": pq.read_metadata(done).num_rows, "resumed": True}
            continue  # finished before a kill
        counts[split] = _explain_split(cfg, split, target, docs, explainer, extract_cfg, progress, salient)
    summary = {"dataset": str(cfg.dataset), "explainer": cfg.explainer, "splits": counts,
               "config": {**asdict(cfg), "dataset": str(cfg.dataset), "out": str(cfg.out), "splits": [*counts]}}
    write_json(cfg.out / SUMMARY, json.loads(json.dumps(summary)))
    return summary
