"""Is NLA B better than NLA A on the same held-out rows? A paired bootstrap of the FVE gain.

    nla eval --nla runs/a/refit --data runs/b/acts/validation.parquet --max-rows 256 --out runs/a/eval-b
    python benchmarks/paired_fve.py runs/a/eval-b runs/b/eval

Two `nla eval` folders that scored the same file with the same --max-rows (eval samples its
rows with a fixed seed, so the same file gives the same rows) are joined row by row on
(doc_id, position). The gain is FVE_B - FVE_A = (mean MSE_A - mean MSE_B) / B, with B the
held-out denominator both reports share. Resampling rows (not the two runs separately) keeps
each row's difficulty out of the interval: a gain whose 95% interval stays above 0 is real
on these rows; one that straddles 0 is not shown. With --answered, only the rows both NLAs answered
(a selected subset: what the answers say, apart from how often one fails).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from nla.autoencoder.verbalizer import FAILED_MSE


def read_eval(folder: Path) -> tuple[dict, dict[tuple[str, int], float]]:
    """eval.json and the NLA's per-row MSE keyed by (doc_id, position)."""
    report = json.loads((folder / "eval.json").read_text())
    rows = pq.read_table(folder / "rows.parquet", columns=["doc_id", "position", "mse_nla"]).to_pydict()
    mse = {(str(d), int(p)): float(m) for d, p, m in zip(rows["doc_id"], rows["position"], rows["mse_nla"])}
    return report, mse


def paired_gain(mse_a: np.ndarray, mse_b: np.ndarray, denominator: float, *,
                resamples: int = 10_000, seed: int = 0) -> dict:
    """The FVE gain of B over A and its 95% bootstrap interval over rows."""
    diff = (mse_a - mse_b) / denominator
    picks = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[picks].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"gain": float(diff.mean()), "low": float(low), "high": float(high),
            "b_better_rows": float((diff > 0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="eval folder of the baseline NLA")
    parser.add_argument("b", type=Path, help="eval folder of the candidate NLA (same data file and --max-rows)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--answered", action="store_true",
                        help="only the rows both NLAs answered (a failed answer scores FAILED_MSE): a selected "
                             "subset, to tell a gain from fewer failures apart from one in what the answers say")
    args = parser.parse_args()

    report_a, rows_a = read_eval(args.a)
    report_b, rows_b = read_eval(args.b)
    if rows_a.keys() != rows_b.keys():
        raise SystemExit(f"the two evaluations scored different rows ({len(rows_a.keys() & rows_b.keys())} shared "
                         f"of {len(rows_a)} and {len(rows_b)}): run both on the same --data with the same --max-rows")
    denominators = report_a["baseline_denominator"], report_b["baseline_denominator"]
    if not np.isclose(*denominators, rtol=1e-4):
        raise SystemExit(f"the two reports use different denominators B {denominators}: not the same rows")
    keys = sorted(rows_a)
    if args.answered:
        keys = [k for k in keys if rows_a[k] < FAILED_MSE and rows_b[k] < FAILED_MSE]
        print(f"rows both answered: {len(keys)} of {len(rows_a)} (a selected subset)")
    result = paired_gain(np.array([rows_a[k] for k in keys]), np.array([rows_b[k] for k in keys]),
                         denominators[0], resamples=args.resamples)
    print(f"{len(keys)} rows, B = {denominators[0]:.3f}")
    print(f"A {args.a}: FVE {report_a['fve']:+.3f}   B {args.b}: FVE {report_b['fve']:+.3f}")
    print(f"gain B - A: {result['gain']:+.3f}, 95% interval [{result['low']:+.3f}, {result['high']:+.3f}]; "
          f"B better on {result['b_better_rows']:.0%} of rows")


if __name__ == "__main__":
    main()
