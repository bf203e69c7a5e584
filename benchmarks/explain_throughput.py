"""Throughput of NLA.explain: batched greedy generation against one activation at a time.

    python benchmarks/explain_throughput.py \
        --nla runs/nla --data runs/acts/validation.parquet

Both runs happen in this process, on the same held-out activations, with the same
max_new_tokens, after one warm-up call. Reports activations/s for each and their ratio
(the target is >= 4x at batch 16-32), and how many batched greedy texts equal the
one-at-a-time texts: every row shares the same prompt, so batching needs no padding and
greedy decoding should not change; a disagreement points at numerical drift in batched
matmuls (a tie between two next tokens), not at a bug in the injection.
"""

from __future__ import annotations

import argparse
import json
import time

import pyarrow.parquet as pq
import torch

from nla.autoencoder.nla import NLA
from nla.inputs import vectors_of


def timed_explain(nla: NLA, vectors: torch.Tensor, batch_size: int, max_new_tokens: int) -> tuple[list, float]:
    started = time.perf_counter()
    explanations = nla.explain(vectors, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return explanations, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nla", required=True)
    parser.add_argument("--data", required=True, help="A held-out split from nla extract.")
    parser.add_argument("--rows", type=int, default=32, help="Activations explained (the first N rows).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=150)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()

    nla = NLA.load(args.nla)
    vectors = torch.from_numpy(vectors_of(pq.read_table(args.data).slice(0, args.rows)).copy())
    nla.explain(vectors[:2], max_new_tokens=4, batch_size=2)  # warm-up: first-call allocations and lazy init

    batched, batched_s = timed_explain(nla, vectors, args.batch_size, args.max_new_tokens)
    single, single_s = timed_explain(nla, vectors, 1, args.max_new_tokens)
    same = sum(a.answer == b.answer for a, b in zip(batched, single))
    figures = {
        "rows": len(vectors), "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "torch_threads": torch.get_num_threads(),
        "batched_activations_per_s": len(vectors) / batched_s, "single_activations_per_s": len(vectors) / single_s,
        "speedup": single_s / batched_s,
        "batched_tokens_generated": sum(e.num_tokens for e in batched),
        "single_tokens_generated": sum(e.num_tokens for e in single),
        "greedy_texts_equal": same, "greedy_agreement": same / len(vectors),
        "failure_rate_batched": sum(e.text is None for e in batched) / len(vectors),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['rows']} activations, max_new_tokens {args.max_new_tokens}, {figures['torch_threads']} threads")
    print(f"  batched (batch {args.batch_size}): {figures['batched_activations_per_s']:.2f} activations/s "
          f"({batched_s:.1f} s, {figures['batched_tokens_generated']} tokens)")
    print(f"  one at a time:      {figures['single_activations_per_s']:.2f} activations/s "
          f"({single_s:.1f} s, {figures['single_tokens_generated']} tokens)")
    print(f"  speedup {figures['speedup']:.1f}x (target >= 4x); batched greedy texts equal one-at-a-time: "
          f"{same}/{len(vectors)}")


if __name__ == "__main__":
    main()
