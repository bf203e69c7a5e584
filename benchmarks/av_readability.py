"""How well the AV can write a format from the vector alone, per way of reading it, next to its control.

    python benchmarks/av_readability.py --explained runs/acts/explanations-offline --format v2_12 \
        --ar runs/ceiling/v2_12/run --out runs/readability --steps 150 --variants residual,residual+6,embedding

The AV learns the texts of `--format` (a variant of benchmarks/format_ceiling.py, whose AR
for the same format is passed as --ar). For each variant it trains a fresh AV with `nla train-av`'s
own function on av_sft for the same number of steps, rows, order and learning rate; only how it
reads the vector differs (item 3 of issue 22). A variant is SITE[@E][+E][*T][:rN[sS]][-shuffled]:
  embedding | residual   the released site (the marker's embedding) or block K's output (the preset)
  @E                     residual: block E's output instead of block K's (injection_layer)
  +E                     residual: block E's output as well as block K's (two sites; injection.early_layer)
  *T                     residual: a learned projector to T soft tokens after the marker (injection.soft_tokens)
  :rN                    LoRA rank N instead of --lora-rank (N = 0: every weight trained)
  sS                     stored at rank S (train-av --save-rank); when the same variant without sS is also in
                         the list, its trained adapter is cut instead of training again (the same weights)
  -shuffled              the control: every explanation paired with another row's activation
It then explains held-out validation activations greedily (with --no-repeat-ngram N, no N tokens twice in an
answer: a cure for loops; point --out at a copy of a finished run's folders to score them again without training)
and reports:
  fve               end to end: the given AR reading the AV's explanations (failures score MSE 2)
  gain_over_first   the paired FVE gain over the first variant on the same rows, with its 95% bootstrap
                    interval (benchmarks/paired_fve.py); the first variant is the baseline
  quote_suffix      of the quote's last N tokens, how many the AV got right, counted back from the end
  next_top1         the AV's first predicted next token equals the target's
  setting           the AV named the passage's genre and topic exactly
  failure_rate      answers without closing tags
One JSON line per variant goes to OUT/results.jsonl, its per-row MSE to OUT/VARIANT/row_mse.json
(a killed run resumes: train-av from its checkpoints, the list at the next variant).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml
from format_ceiling import last_tokens, variant_texts, write_variant  # benchmarks/ is on sys.path
from paired_fve import paired_gain

from nla.autoencoder.hub import role_folder
from nla.autoencoder.nla import reconstruct_texts
from nla.autoencoder.reconstructor import reconstruction_mse
from nla.autoencoder.shared import load_ar_folder, load_av_folder, store_at_rank
from nla.autoencoder.verbalizer import FAILED_MSE
from nla.eval.metrics import baseline
from nla.inputs import vectors_of
from nla.layout import ADAPTER_DIRS, sidecar_path
from nla.train.av import train_av
from nla.train.config import AVTrainConfig

QUOTE = re.compile(r'ends: "…?(.*)"\s*$', re.DOTALL)
NEXT = re.compile(r'Next it expects "(.*?)"')


def suffix_match(tokenizer, written: str | None, true: str) -> int:
    """How many tokens, counted back from the end, the written quote shares with the true one."""
    if not written:
        return 0
    a = tokenizer(written, add_special_tokens=False)["input_ids"][::-1]
    b = tokenizer(true, add_special_tokens=False)["input_ids"][::-1]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def score(texts: list[str | None], table, tokenizer, quote_length: int, true_texts: list[str]) -> dict:
    rows = table.select(["quote", "next_tokens"]).to_pylist()
    for r in rows:  # the quote the format asked for: the last quote_length tokens
        r["quote"] = last_tokens(tokenizer, r["quote"], quote_length)
    quote_tokens = [len(tokenizer(r["quote"], add_special_tokens=False)["input_ids"]) for r in rows]
    matched, next_hits, setting_hits = [], 0, 0
    for text, row, true in zip(texts, rows, true_texts):
        quote = QUOTE.search(text or "")
        matched.append(suffix_match(tokenizer, quote.group(1) if quote else None, row["quote"]))
        nxt = NEXT.search(text or "")
        next_hits += bool(nxt and row["next_tokens"] and nxt.group(1) == row["next_tokens"][0])
        setting_hits += bool(text and text.split(".")[0] == true.split(".")[0])
    n = len(rows)
    return {"quote_suffix_tokens": round(sum(matched) / n, 2), "quote_tokens": round(sum(quote_tokens) / n, 2),
            "quote_first_token": round(sum(m >= 1 for m in matched) / n, 3),
            "quote_4_tokens": round(sum(m >= 4 for m in matched) / n, 3),
            "next_top1": round(next_hits / n, 3), "setting": round(setting_hits / n, 3)}


def variant_settings(name: str, lora_rank: int) -> dict:
    """The AVTrainConfig settings a variant name stands for (see the module docstring)."""
    rest, shuffled = name.removesuffix("-shuffled"), name.endswith("-shuffled")
    rest, _, rank = rest.partition(":r")
    rank, _, saved = rank.partition("s")
    rest, _, soft = rest.partition("*")
    rest, _, early = rest.partition("+")
    site, _, into = rest.partition("@")
    if site not in ("embedding", "residual") or (site == "embedding" and (into or early or soft)):
        raise SystemExit(f"variant {name}: use embedding or residual[@E][+E][*T][:rN[sS]][-shuffled]")
    return {"injection": site, "injection_layer": int(into) if into else None,
            "injection_early_layer": int(early) if early else None,
            "injection_soft_tokens": int(soft) if soft else 0,
            "lora_rank": int(rank) if rank else lora_rank, "shuffle_activations": shuffled,
            "save_rank": int(saved) if saved else None}


def cut_variant(out: Path, trained: Path, rank: int) -> None:
    """OUT as the trained variant's AV stored at `rank`: what train-av --save-rank writes after the same training
    (the same function on the same final weights), without training again."""
    store_at_rank(trained / ADAPTER_DIRS["av"], out / ADAPTER_DIRS["av"], rank)
    for name in ("av_metrics.jsonl", "train_seconds.json"):  # the training is the trained variant's
        shutil.copy2(trained / name, out / name)


def train_variant(out: Path, data: Path, settings: dict, args, rows: int) -> float:
    """A fresh AV of this variant; the seconds of the run that finished it (kept beside it for a rerun)."""
    timing = out / "train_seconds.json"
    if not timing.exists():
        clock = time.perf_counter()
        train_av(AVTrainConfig(data=data, out=out, lr=args.lr, batch_size=args.batch_size,
                               epochs=args.steps * args.batch_size / rows, checkpoint_every=50, seed=args.seed,
                               **settings),
                 progress=False)
        timing.write_text(json.dumps(time.perf_counter() - clock))
    return json.loads(timing.read_text())


def row_errors(out: Path, golds: torch.Tensor, ar, args) -> tuple[list[str | None], torch.Tensor]:
    """The AV's greedy explanations of the held-out vectors and the AR's error on each (failures: FAILED_MSE)."""
    av, _ = load_av_folder(role_folder(out, "av"))  # the LoRA adapter, merged as it loads
    texts = [e.text for e in av.explain(golds, max_new_tokens=args.max_new_tokens, batch_size=32,
                                        no_repeat_ngram=args.no_repeat_ngram)]
    ok = [i for i, t in enumerate(texts) if t]
    mse = torch.full((len(golds),), FAILED_MSE)
    if ok:
        ar_model, ar_tokenizer, ar_meta = ar
        predicted = reconstruct_texts(ar_model, ar_tokenizer, ar_meta.prompt_templates["ar"], [texts[i] for i in ok])
        mse[ok] = reconstruction_mse(predicted, golds[ok])
    (out / "row_mse.json").write_text(json.dumps(mse.tolist()))
    return texts, mse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explained", type=Path, required=True, help="explain-data output (av_sft, validation)")
    parser.add_argument("--ar", type=Path, required=True, help="a run folder whose ar/ reads this format")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--format", default="v2_12", help="a v2_N variant of benchmarks/format_ceiling.py")
    parser.add_argument("--variants", default="residual,residual-shuffled,residual+6,embedding")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--eval-rows", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--no-repeat-ngram", type=int, default=0,
                        help="decode every variant with no N tokens twice in an answer (0: plain greedy)")
    parser.add_argument("--seed", type=int, default=0, help="the AV's initialisation and batch order (every variant)")
    args = parser.parse_args()
    names = args.variants.split(",")
    settings = {name: variant_settings(name, args.lora_rank) for name in names}  # every name checked first

    from nla.models import load_target

    source = args.explained / "av_sft.parquet"
    model = yaml.safe_load(sidecar_path(source).read_text())["extraction"]["base_model"]
    tokenizer = load_target(model).tokenizer
    quote_length = int(args.format.removeprefix("v2_"))
    data = write_variant(source, args.out / args.format / "av_sft.parquet",
                         variant_texts(args.format, pq.read_table(source), tokenizer))
    rows = pq.read_metadata(data).num_rows
    eval_table = pq.read_table(args.explained / "validation.parquet").slice(0, args.eval_rows)
    true_texts = variant_texts(args.format, eval_table, tokenizer)
    golds = torch.from_numpy(vectors_of(eval_table).copy())
    reference = baseline(golds)
    ar = load_ar_folder(role_folder(args.ar, "ar") or args.ar)
    ar[0].eval()
    results_file = args.out / "results.jsonl"
    done = {json.loads(line)["variant"] for line in results_file.read_text().splitlines()} \
        if results_file.exists() else set()
    for name in names:
        if name in done:
            continue
        out, saved = args.out / name, settings[name]["save_rank"]
        uncut = name.replace(f"s{saved}", "", 1) if saved else None
        if uncut in names and not (out / "train_seconds.json").exists():
            train_variant(args.out / uncut, data, {**settings[name], "save_rank": None}, args, rows)
            cut_variant(out, args.out / uncut, saved)
        seconds = train_variant(out, data, settings[name], args, rows)
        texts, mse = row_errors(out, golds, ar, args)
        first = torch.tensor(json.loads((args.out / names[0] / "row_mse.json").read_text()))
        losses = [json.loads(line)["loss"] for line in (out / "av_metrics.jsonl").read_text().splitlines()]
        result = {"variant": name, "fve": round(1 - float(mse.mean()) / reference.denominator, 4),
                  "gain_over_first": paired_gain(first.numpy(), mse.numpy(), reference.denominator),
                  "failure_rate": round(sum(not t for t in texts) / len(texts), 3),
                  **score(texts, eval_table, tokenizer, quote_length, true_texts),
                  "final_train_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4), "steps": args.steps,
                  "seed": args.seed, "no_repeat_ngram": args.no_repeat_ngram, "train_seconds": round(seconds, 1),
                  "eval_rows": len(golds), "examples": texts[:3]}
        print(json.dumps(result), flush=True)
        with results_file.open("a") as f:
            f.write(json.dumps(result) + "\n")
        shutil.rmtree(out / "av", ignore_errors=True)  # a merged copy (~0.5 GB), if any; av_adapter/ stays


if __name__ == "__main__":
    main()
