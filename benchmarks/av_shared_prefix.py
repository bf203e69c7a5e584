"""What running the AV prompt's shared prefix once per batch saves, measured in one process.

    python benchmarks/av_shared_prefix.py --data RUN/acts/explanations/av_sft.parquet
    python benchmarks/av_shared_prefix.py --data ... --steps 12 --batch-size 8 --threads 2

The AV's training step (LoRA 16 on smollm2-135m, residual injection at K, the real
explanations and activations of an explain-data parquet) with and without the shared
prefix (`train/av.py: response_logits`): the same batches, the two ways alternating step
by step so both see the same machine, forward + backward each (no update: both ways see
the same weights, and the optimizer's work is the same either way). Prints
the median seconds a step of each and their ratio, the tokens each computes a step, and
how far their losses differ (they must agree: the same loss, computed two ways).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from nla.autoencoder.injection import RESIDUAL, Injection
from nla.data.norms import suggest_injection_scale
from nla.inputs import vectors_of
from nla.train.av import av_batch, build_verbalizer, response_ids, response_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="an explain-data parquet (av_sft.parquet)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=20)
    parser.add_argument("--steps", type=int, default=12, help="steps of each way (the first of each is warm-up)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    table = pq.read_table(args.data)
    golds, texts = torch.tensor(vectors_of(table)), table.column("explanation").to_pylist()
    scale = suggest_injection_scale(float(golds.norm(dim=1).mean()))
    av, target = build_verbalizer(args.model, scale, 16, "cpu", Injection(RESIDUAL, args.layer))
    responses = [response_ids(target.tokenizer, t, 150) for t in texts]
    rows = np.random.default_rng(0).permutation(len(texts))[: args.steps * args.batch_size]

    seconds, losses, tokens = ({0: [], av.shared_prefix: []} for _ in range(3))
    for step in range(args.steps):
        batch = rows[step * args.batch_size: (step + 1) * args.batch_size]
        for shared in (0, av.shared_prefix) if step % 2 else (av.shared_prefix, 0):
            start = time.perf_counter()
            embeds, mask, labels = av_batch(av, golds[batch], [responses[i] for i in batch], target.pad_id)
            with av.reading():
                loss = response_loss(av.model, embeds, mask, labels, len(av.prompt), shared)
            loss.backward()
            av.model.zero_grad(set_to_none=True)
            if step:
                seconds[shared].append(time.perf_counter() - start)
            losses[shared].append(loss.item())
            width = embeds.shape[1]
            tokens[shared].append(shared + len(batch) * (width - shared) if shared else len(batch) * width)

    full, cut = statistics.median(seconds[0]), statistics.median(seconds[av.shared_prefix])
    print(f"prompt {len(av.prompt)} tokens, {av.shared_prefix} before the marker; batch {args.batch_size}; "
          f"{args.threads} threads; {args.steps - 1} timed steps each")
    print(f"full forward:  {full:.2f} s/step, {np.mean(tokens[0]):.0f} tokens/step")
    print(f"shared prefix: {cut:.2f} s/step, {np.mean(tokens[av.shared_prefix]):.0f} tokens/step")
    print(f"speed-up {full / cut:.2f}x (tokens {np.mean(tokens[0]) / np.mean(tokens[av.shared_prefix]):.2f}x); "
          f"largest loss difference {max(abs(a - b) for a, b in zip(losses[0], losses[av.shared_prefix])):.2e}")


if __name__ == "__main__":
    main()
