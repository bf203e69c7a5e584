"""A lever for the hidden-theme audit: an AR that reads what a context is about as the context's *direction*.

    python benchmarks/theme_direction.py --explained RUN/acts/explanations --held-out RUN/acts/explanations-val \
        --out ~/nla-runs/theme-direction
    python benchmarks/audit_themes.py --out ~/nla-runs/audit-theme --nla ~/nla-runs/theme-direction/nla \
        --query-form salient

Why: a planted theme moves a token's vector by well under 1% of its variance (audit_themes.py's theme share),
so an AR trained token by token in 2(1 - cos) gains almost nothing from reading it. Averaging a document's
tokens removes most of the per-token variance and keeps what the whole context shares. This trains an AR
(`nla train-ar`'s own function) on one pair per document: the document's salient-words sentences (the
explanation's 'Its system prompt mentions ...' / 'It mentions ...' part, at its last sampled position) and the
mean of its rows' sqrt(d)-normalised activations less the training rows' mean. It reports the held-out cosine
of that direction (and FVE, negative for centred targets) next to the shuffled-text control, and writes OUT/nla
(the shipped AV beside this AR; the AV is only there to make the folder an NLA) for audit_themes.py, whose
transcript-direction signal compares the AR's direction with each transcript's mean assistant vector less the
mean over all transcripts, as this AR was trained. (Its `--centre` search would subtract the index mean from the
AR's direction as well: not this AR's reading.)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from nla_links import link_adapters

from nla.autoencoder.hub import role_folder
from nla.autoencoder.nla import reconstruct_texts
from nla.autoencoder.shared import load_ar_folder
from nla.eval.metrics import baseline, text_fidelity
from nla.explainers.offline import split_about
from nla.inputs import vectors_of
from nla.layout import ACTIVATION_COLUMN
from nla.train.ar import train_ar
from nla.train.config import ARTrainConfig
from nla.train.pairs import write_pairs

SHIPPED_AV = Path(__file__).resolve().parents[1] / "src" / "nla" / "default_nla" / "av_adapter"


def normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * math.sqrt(vectors.shape[1])


def doc_pairs(table: pa.Table, centre: np.ndarray) -> tuple[list[int], list[str], np.ndarray]:
    """Per document with a salient-words part: the row of its last sampled position, that row's about
    sentences, and the document's mean normalised activation less `centre`."""
    vectors = normalised(vectors_of(table))
    docs, positions = table.column("doc_id").to_pylist(), table.column("position").to_pylist()
    texts = table.column("explanation").to_pylist()
    rows_of: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        rows_of.setdefault(doc, []).append(i)
    keep, abouts, directions = [], [], []
    for rows in rows_of.values():
        last = max(rows, key=lambda i: positions[i])
        about = split_about(texts[last])[0]
        if about:
            keep.append(last)
            abouts.append(about)
            directions.append(vectors[rows].mean(axis=0) - centre)
    return keep, abouts, np.stack(directions).astype(np.float32)


def pair_table(table: pa.Table, rows: list[int], texts: list[str], directions: np.ndarray) -> pa.Table:
    """The documents' rows in explain-data's layout, each with its about text and its direction."""
    table = table.take(rows)
    d = directions.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(directions.reshape(-1), pa.float32()), d)
    table = table.set_column(table.column_names.index(ACTIVATION_COLUMN), ACTIVATION_COLUMN, column)
    return table.set_column(table.column_names.index("explanation"), "explanation", pa.array(texts, pa.string()))


def pair_folder(out: Path, ar_adapter: Path) -> Path:
    """OUT/nla: the shipped AV's adapter beside the trained AR's, as links."""
    return link_adapters(out / "nla", av_adapter=SHIPPED_AV, ar_adapter=ar_adapter)


def held_out_fve(ar_folder: Path, texts: list[str], directions: np.ndarray) -> dict:
    ar, tokenizer, meta = load_ar_folder(ar_folder)
    ar.eval()
    golds = torch.from_numpy(directions)
    reference = baseline(golds)
    template = meta.prompt_templates["ar"]
    read = text_fidelity(lambda t: reconstruct_texts(ar, tokenizer, template, t), texts, golds, reference)
    real, shuffled = read["real"], read["shuffled"]
    return {"docs": len(texts), "fve": round(real["fve"], 4), "cosine": round(real["cosine"], 4),
            "shuffled_fve": round(shuffled["fve"], 4), "shuffled_cosine": round(shuffled["cosine"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explained", type=Path, required=True, help="explain-data output (its training splits)")
    parser.add_argument("--held-out", type=Path, required=True, help="explain-data output holding validation")
    parser.add_argument("--splits", default="ar_sft,av_sft", help="training splits, comma-separated")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    sources = [args.explained / f"{split}.parquet" for split in args.splits.split(",")]
    tables = [pq.read_table(path) for path in sources]
    centre = np.concatenate([normalised(vectors_of(t)) for t in tables]).mean(axis=0)
    train = pa.concat_tables([pair_table(t, *doc_pairs(t, centre)) for t in tables])
    data = write_pairs(train, sources[0], args.out / "pairs" / "train.parquet")

    run = args.out / "run"
    train_ar(ARTrainConfig(data=data, out=run, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                           checkpoint_every=50))
    _, texts, directions = doc_pairs(pq.read_table(args.held_out / "validation.parquet"), centre)
    result = {"train_docs": train.num_rows, "epochs": args.epochs,
              **held_out_fve(role_folder(run, "ar"), texts, directions), "example": texts[0],
              "nla": str(pair_folder(args.out, run / "ar_adapter"))}
    print(json.dumps(result), flush=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
