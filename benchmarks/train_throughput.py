"""Training throughput of the SFT stages as a fraction of this machine's fp32 matmul throughput.

    python benchmarks/train_throughput.py                  # smollm2-135m, LoRA (the defaults)
    python benchmarks/train_throughput.py --lora-rank 0    # full fine-tuning

Runs the real trainers (train_ar, train_av, default batch sizes) for a few steps on
pairs built from the embedded corpus, takes the step times from their metrics files,
and counts each of those steps' FLOPs with torch's FlopCounterMode on the same batches
(forward + backward; the optimizer's elementwise work is not counted, so the fraction
is if anything understated). The peak is the best fp32 `torch.mm` rate over square
sizes 1024-4096, measured in the same process with the same threads.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.flop_counter import FlopCounterMode

from nla.autoencoder.nla import ar_input_ids
from nla.autoencoder.reconstructor import reconstruction_mse
from nla.data.corpus import load_corpus
from nla.data.dataset import rows_to_table
from nla.inputs import vectors_of
from nla.models import load_target
from nla.models.activations import pad_right
from nla.train.ar import AR_TEMPLATE, build_reconstructor, train_ar
from nla.train.av import av_batch, build_verbalizer, response_ids, response_loss, train_av
from nla.train.config import ARTrainConfig, AVTrainConfig
from nla.train.pairs import BatchOrder

COLUMNS = ("doc_id", "position", "n_raw_tokens", "activation_layer", "token_id", "token",
           "detokenized_text_truncated", "source", "genre", "topic", "split")


def matmul_peak(seconds: float = 2.0) -> float:
    """Best fp32 FLOP/s of torch.mm over a few square sizes."""
    best = 0.0
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm up
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            runs += 1
        best = max(best, 2 * n**3 * runs / (time.perf_counter() - start))
    return best


def write_pairs(path: Path, d_model: int, rows: int) -> list[str]:
    """Explanation-length texts (about 90 words of the embedded corpus) with random activations."""
    docs = [d for d in load_corpus("default", limit=4 * rows) if not d.is_chat][:rows]
    texts = [" ".join(doc.text.split()[:90]) for doc in docs]
    vectors = np.random.default_rng(0).normal(size=(len(texts), d_model)).astype(np.float32)
    table = rows_to_table(vectors, {c: [None] * len(texts) for c in COLUMNS}, d_model)
    pq.write_table(table.append_column("explanation", pa.array(texts)), path)
    return texts


def step_seconds(metrics: Path) -> list[float]:
    times = [json.loads(line)["seconds"] for line in metrics.read_text().splitlines()]
    return list(np.diff(times))  # drops step 1 (warm-up) by construction


def count_flops(loss_fn, steps: range) -> list[int]:
    counts = []
    for step in steps:
        with FlopCounterMode(display=False) as counter:
            loss_fn(step).backward()
        counts.append(counter.get_total_flops())
    return counts


def ar_flops(cfg: ARTrainConfig, texts: list[str], golds: torch.Tensor, steps: range) -> list[int]:
    ar, target = build_reconstructor(cfg.model, cfg.layer, cfg.lora_rank, "cpu")
    rows = ar_input_ids(target.tokenizer, texts, AR_TEMPLATE, target.adapter.requires_bos)
    batches = BatchOrder(len(rows), cfg.batch_size, cfg.epochs, np.random.default_rng(cfg.seed))

    def loss(step):
        batch = batches.rows_at(step)
        ids, mask = pad_right([rows[i] for i in batch], target.pad_id, target.device)
        return reconstruction_mse(ar(ids, mask), golds[batch]).mean()

    return count_flops(loss, steps)


def av_flops(cfg: AVTrainConfig, scale: float, texts: list[str], golds: torch.Tensor, steps: range) -> list[int]:
    av, target = build_verbalizer(cfg.model, scale, cfg.lora_rank, "cpu")
    responses = [response_ids(target.tokenizer, t, cfg.max_response_tokens) for t in texts]
    batches = BatchOrder(len(texts), cfg.batch_size, cfg.epochs, np.random.default_rng(cfg.seed))

    def loss(step):
        batch = batches.rows_at(step)
        embeds, mask, labels = av_batch(av, golds[batch], [responses[i] for i in batch], target.pad_id)
        return response_loss(av.model, embeds, mask, labels, len(av.prompt), av.shared_prefix)

    return count_flops(loss, steps)


def report(stage: str, flops: list[int], seconds: list[float], peak: float) -> dict:
    rate = sum(flops) / sum(seconds)
    print(f"{stage}: {np.mean(seconds):.2f} s/step, {np.mean(flops) / 1e12:.3f} TFLOP/step, "
          f"{rate / 1e9:.1f} GFLOP/s = {rate / peak:.0%} of the matmul peak")
    return {"seconds_per_step": float(np.mean(seconds)), "flops_per_step": float(np.mean(flops)),
            "flops_per_second": rate, "fraction_of_peak": rate / peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=8, help="Timed steps per stage (the first is a warm-up).")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    torch.manual_seed(0)
    target = load_target(args.model, device="cpu")
    layer, d_model = target.default_layer, target.d_model
    del target
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    results = {"model": args.model, "threads": torch.get_num_threads(), "matmul_peak": peak}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.parquet"
        batch_sizes = {"ar": ARTrainConfig.batch_size, "av": AVTrainConfig.batch_size}
        texts = write_pairs(data, d_model, max(batch_sizes.values()) * args.steps)
        golds = torch.from_numpy(vectors_of(pq.read_table(data)).copy())
        common = dict(data=data, model=args.model, layer=layer, lora_rank=args.lora_rank, checkpoint_every=10**6,
                      device="cpu")
        ar_cfg = ARTrainConfig(out=Path(tmp) / "ar", epochs=args.steps * batch_sizes["ar"] / len(texts), **common)
        av_cfg = AVTrainConfig(out=Path(tmp) / "av", epochs=args.steps * batch_sizes["av"] / len(texts), **common)
        train_ar(ar_cfg, progress=False)
        results["ar"] = report("AR", ar_flops(ar_cfg, texts, golds, range(1, args.steps)),
                               step_seconds(ar_cfg.out / "ar_metrics.jsonl"), peak)
        av = train_av(av_cfg, progress=False)
        results["av"] = report("AV", av_flops(av_cfg, av["injection_scale"], texts, golds, range(1, args.steps)),
                               step_seconds(av_cfg.out / "av_metrics.jsonl"), peak)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
