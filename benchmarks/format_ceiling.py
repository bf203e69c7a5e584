"""The ceiling of each warm-start explanation format: an AR trained on that format's *true* texts.

    python benchmarks/format_ceiling.py --explained runs/acts/explanations-offline --out runs/ceiling \
        --steps 80 --variants quote4,quote16,v2_12,context
    python benchmarks/format_ceiling.py --explained ... --out ... --ar runs/smol/sft/ar --variants v2_12

For each variant it builds the text every row of `ar_sft` and `validation` would carry
(from the columns `nla explain-data` writes: quote, next_tokens, genre, topic, and the
true context), trains an AR on ar_sft with `nla train-ar`'s own function for the same
number of steps ("explained": the explanation column as written; "about": only its salient-words
sentences; "no_about": all but them), and reports held-out FVE on validation next to the shuffled-text
control (the same AR reading another row's text). Shorter quotes are cut from the
exact quote by re-tokenising it (explain-data's --quote-tokens must be at least the
longest N asked for). One JSON line per variant is appended to OUT/results.jsonl,
so a killed run resumes at the next variant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from nla.autoencoder.hub import role_folder
from nla.autoencoder.nla import reconstruct_texts
from nla.autoencoder.shared import load_ar_folder
from nla.eval.metrics import baseline, text_fidelity
from nla.explainers.base import ExplainRequest
from nla.explainers.offline import expectation, setting, split_about
from nla.inputs import vectors_of
from nla.layout import sidecar_path
from nla.train.ar import train_ar
from nla.train.config import ARTrainConfig


def last_tokens(tokenizer, quote: str, n: int) -> str:
    return tokenizer.decode(tokenizer(quote, add_special_tokens=False)["input_ids"][-n:])


def variant_texts(name: str, table: pa.Table, tokenizer) -> list[str]:
    if name == "explained":  # the texts as explain-data wrote them (with its --salient-words, if any)
        return table.column("explanation").to_pylist()
    if name in ("about", "no_about"):  # only the salient-words sentences of those texts, or all but them
        return [split_about(text)[name == "no_about"] for text in table.column("explanation").to_pylist()]
    rows = table.select(["quote", "next_tokens", "next_probs", "source", "genre", "topic",
                         "detokenized_text_truncated", "token"]).to_pylist()
    texts = []
    for r in rows:
        request = ExplainRequest(row_id="", context=r["detokenized_text_truncated"], token=r["token"],
                                 source=r["source"], genre=r["genre"], topic=r["topic"],
                                 next_tokens=tuple(zip(r["next_tokens"], r["next_probs"])))
        if name == "context":
            texts.append(r["detokenized_text_truncated"])
        elif name == "setting":
            texts.append(setting(request))
        elif name == "next":
            texts.append(expectation(request) or "")
        elif name.startswith("quote"):
            texts.append(f'"…{last_tokens(tokenizer, r["quote"], int(name[5:]))}"')
        elif name.startswith("v2_"):
            quote = last_tokens(tokenizer, r["quote"], int(name[3:]))
            texts.append(f'{setting(request)} {expectation(request)} The text so far ends: "…{quote}"')
        else:
            raise SystemExit(f"unknown variant {name}")
    return texts


def write_variant(source: Path, dest: Path, texts: list[str]) -> Path:
    table = pq.read_table(source)
    table = table.set_column(table.column_names.index("explanation"), "explanation", pa.array(texts, pa.string()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, dest)
    sidecar_path(dest).write_text(sidecar_path(source).read_text())
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explained", type=Path, required=True, help="explain-data output (ar_sft, validation)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="setting,next,quote4,quote8,quote16,quote32,v2_8,v2_12,v2_16,context")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-rows", type=int, default=256)
    parser.add_argument("--rows-with", help="score only the held-out rows whose explanation holds this text "
                        '(e.g. "Its system prompt": the chats with a system prompt of their own)')
    parser.add_argument("--ar", type=Path, help="score this trained AR folder (e.g. RUN/sft/ar) on each variant's "
                        "true held-out texts instead of training one per variant")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from nla.models import load_target

    train_table = pq.read_table(args.explained / "ar_sft.parquet")
    eval_table = pq.read_table(args.explained / "validation.parquet")
    if args.rows_with:
        keep = [args.rows_with in text for text in eval_table.column("explanation").to_pylist()]
        eval_table = eval_table.filter(pa.array(keep))
    eval_table = eval_table.slice(0, args.eval_rows)
    meta = yaml.safe_load(sidecar_path(args.explained / "ar_sft.parquet").read_text())
    tokenizer = load_target(meta["extraction"]["base_model"]).tokenizer
    golds = torch.from_numpy(vectors_of(eval_table).copy())
    reference = baseline(golds)
    results_file = args.out / "results.jsonl"
    done = {json.loads(line)["variant"] for line in results_file.read_text().splitlines()} \
        if results_file.exists() else set()
    for name in args.variants.split(","):
        if name in done:
            continue
        clock = time.perf_counter()
        if args.ar is None:
            texts = variant_texts(name, train_table, tokenizer)
            data = write_variant(args.explained / "ar_sft.parquet", args.out / name / "ar_sft.parquet", texts)
            train_ar(ARTrainConfig(data=data, out=args.out / name / "run", lr=args.lr, batch_size=args.batch_size,
                                   epochs=args.steps * args.batch_size / len(texts), checkpoint_every=10_000),
                     progress=False)
        seconds = time.perf_counter() - clock
        ar, ar_tokenizer, ar_meta = load_ar_folder(args.ar or role_folder(args.out / name / "run", "ar"))
        ar.eval()
        held_out = variant_texts(name, eval_table, tokenizer)
        template = ar_meta.prompt_templates["ar"]
        read = text_fidelity(lambda t: reconstruct_texts(ar, ar_tokenizer, template, t), held_out, golds, reference)
        real, shuffled = read["real"], read["shuffled"]
        result = {"variant": name, "fve": round(real["fve"], 4), "shuffled_fve": round(shuffled["fve"], 4),
                  "cosine": round(real["cosine"], 4), "train_seconds": round(seconds, 1), "steps": args.steps,
                  "mean_chars": round(sum(map(len, held_out)) / len(held_out), 1), "eval_rows": len(golds),
                  "example": held_out[0]}
        print(json.dumps(result), flush=True)
        with results_file.open("a") as f:
            f.write(json.dumps(result) + "\n")
        if args.ar is None:
            shutil.rmtree(args.out / name / "run" / "ar", ignore_errors=True)  # a merged copy, if any: ~0.5 GB


if __name__ == "__main__":
    main()
