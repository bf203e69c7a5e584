"""Item 5's cheaper training signal: one round of expert iteration on an NLA's AV, against SFT on the same rows and steps.

    python benchmarks/expert_iteration.py --nla default --data RUN/acts/explanations/av_sft.parquet --out ~/nla-runs/ei
    nla eval --nla ~/nla-runs/ei/expert --data RUN/acts/validation.parquet --max-rows 256 --out ~/nla-runs/ei/eval-expert
    nla eval --nla ~/nla-runs/ei/sft --data RUN/acts/validation.parquet --max-rows 256 --out ~/nla-runs/ei/eval-sft
    nla eval --nla default --data RUN/acts/validation.parquet --max-rows 256 --out ~/nla-runs/ei/eval-start
    python benchmarks/paired_fve.py ~/nla-runs/ei/eval-start ~/nla-runs/ei/eval-expert

Several rounds chain: round R+1 passes round R's OUT/expert as --nla, --seed R+1 (fresh rows) and --no-control.
With --refit-ar the expert folder's AR is the NLA's AR trained on from the chosen pairs (same rows and steps,
--ar-lr), so the next round scores its candidates with an AR that has read the AV's newer texts (item 5's
"refit the AR"); without it every round keeps the NLA's AR.

The round: for --rows activations of the data, the NLA's AV writes its greedy explanation and --samples more at
--temperature; the NLA's own AR scores each (2(1 - cos)); the best becomes the row's SFT target, and the AV,
warm-started from the NLA's, trains on them for --epochs. The control trains the same AV on the same rows' offline
explanations for the same steps (the data's, without their salient-words sentences unless --keep-about: the
shipped NLA's format). Each folder gets the NLA's AR beside its new AV (OUT/expert, OUT/sft), so `nla eval`
reads it as an NLA. OUT/result.json: the minutes of each phase, and on the training rows the AR's mean error of
the greedy explanations against the chosen ones (what the round can teach at most). The drafting and the choice
are the functions of `nla train`'s expert stage (src/nla/train/expert.py), which runs the rounds in a pipeline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from nla_links import link_adapters

from nla.atomic import write_json
from nla.autoencoder.nla import NLA
from nla.explainers.offline import split_about
from nla.inputs import vectors_of
from nla.train.ar import train_ar
from nla.train.av import train_av
from nla.train.config import ARTrainConfig, AVTrainConfig, ExpertConfig
from nla.train.expert import best_of, candidates
from nla.train.pairs import write_text_pairs

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "nla" / "default_nla"


def train_folder(out: Path, nla_folder: Path, data: Path, args, refit: bool = False) -> float:
    """An AV trained on `data`, warm-started from the NLA's AV, beside the NLA's AR (linked) or, with `refit`,
    beside the NLA's AR warm-started on the same pairs for the same steps; returns minutes."""
    if not refit:
        link_adapters(out, ar_adapter=nla_folder / "ar_adapter")
    start = time.perf_counter()
    if not (out / "av_adapter").exists():
        train_av(AVTrainConfig(data=data, out=out, init_from=args.nla, lr=args.lr, batch_size=args.batch_size,
                               epochs=args.epochs, checkpoint_every=50))
    if refit and not (out / "ar_adapter").exists():
        train_ar(ARTrainConfig(data=data, out=out, init_from=args.nla, lr=args.ar_lr, batch_size=args.batch_size,
                               epochs=args.epochs, checkpoint_every=50))
    return (time.perf_counter() - start) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nla", default="default", help="default, or an NLA folder with av_adapter/ and ar_adapter/")
    parser.add_argument("--data", type=Path, required=True, help="explain-data output (its activations and texts)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--keep-about", action="store_true", help="SFT control on the data's texts as they are")
    parser.add_argument("--seed", type=int, default=0, help="which rows: a later round draws fresh ones")
    parser.add_argument("--no-control", action="store_true", help="train the expert AV only (a later round)")
    parser.add_argument("--refit-ar", action="store_true",
                        help="also train the NLA's AR on from the chosen pairs (the expert folder gets it)")
    parser.add_argument("--ar-lr", type=float, default=1e-4, help="the refit AR's learning rate")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    nla_folder = SHIPPED if args.nla == "default" else Path(args.nla)
    table = pq.read_table(args.data)
    rows = np.random.default_rng(args.seed).choice(table.num_rows, min(args.rows, table.num_rows),
                                                   replace=False).tolist()
    table = table.take(rows)
    vectors = torch.tensor(vectors_of(table))
    nla = NLA.load(nla_folder)

    result = {"rows": len(rows), "samples": args.samples, "temperature": args.temperature, "seed": args.seed,
              "refit_ar": args.refit_ar}
    drafting = ExpertConfig(nla=nla_folder, data=args.data, out=args.out, rows=len(rows), samples=args.samples,
                            temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    start = time.perf_counter()  # the slow part, logged as it goes: a rerun goes straight to training
    drafts = candidates(nla, vectors, drafting, args.out, seed=0, progress=True)
    result["sample_minutes"] = (time.perf_counter() - start) / 60  # about 0 where a rerun found the drafts
    start = time.perf_counter()
    chosen, result["selection"] = best_of(nla, vectors, drafts)
    result["score_minutes"] = (time.perf_counter() - start) / 60
    del nla

    offline = [t if args.keep_about else split_about(t)[1] for t in table.column("explanation").to_pylist()]
    control = [text if pick is not None else None for text, pick in zip(offline, chosen)]  # the same rows
    arms = [("expert", chosen)] + ([] if args.no_control else [("sft", control)])
    for name, texts in arms:
        data = write_text_pairs(table, texts, args.data, args.out / "pairs" / f"{name}.parquet")
        result[f"{name}_train_minutes"] = train_folder(args.out / name, nla_folder, data, args,
                                                       refit=args.refit_ar and name == "expert")
    write_json(args.out / "result.json", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
