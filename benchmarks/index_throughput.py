"""Audit-index throughput: `nla index --explain none` against `nla extract` on the same documents, in one process.

    python benchmarks/index_throughput.py [--docs 128] [--repeats 2] [--explain-docs 8]

Both run the shipped NLA's target through block K over the same documents of the default corpus, with the same
length batching: extract keeps 8 sampled positions a document (its default), index keeps every position and
also stores each one's token, role and context in SQLite. The ratio of documents per second is the figure
(issue goal: index >= 0.8x extract). With --explain-docs N, the explained tier is timed too: positions read per
second with 3 explanations a document, batched across documents, and the AV's generation FLOP/s (counted with
torch's FlopCounterMode on one batch, timed on another) as a share of this machine's fp32 matmul peak (measured in
this process by benchmarks/train_throughput.py's matmul_peak; issue goal >= 50%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from train_throughput import matmul_peak  # benchmarks/ is on the path when this script runs

from nla.data.corpus import load_corpus
from nla.data.extract import ExtractConfig, extract_chunk, plan_documents
from nla.reading.config import IndexSettings
from nla.reading.index import build_index, load_index_reader


def time_extract(reader, docs, cfg: ExtractConfig) -> float:
    start = time.perf_counter()
    planned, _ = plan_documents(reader.target, docs, cfg)
    for begin in range(0, len(planned), 16):
        extract_chunk(reader.target, planned[begin : begin + 16], reader.nla.layer, cfg.batch_tokens)
    return time.perf_counter() - start


def time_index(reader, settings: IndexSettings, out: Path) -> float:
    start = time.perf_counter()
    build_index(reader, settings, out, overwrite=True, progress=False)
    return time.perf_counter() - start


def generation_share(reader, rows: int, batch_size: int) -> tuple[float, float]:
    """(activations explained per second, the AV's FLOP/s over the fp32 matmul peak) at one batch size."""
    index = IndexSettings(corpus="default", max_docs=8)
    vectors = torch.cat([reader.nla.activations(reader.target.encode(d.text or d.messages[0]["content"]),
                                                reader.target)[1:] for d in load_corpus("default", limit=8)])
    vectors = vectors[:rows]
    with FlopCounterMode(display=False) as counter:
        reader.nla.explain(vectors[:batch_size], max_new_tokens=index.max_new_tokens, batch_size=batch_size)
    flops = counter.get_total_flops() * (len(vectors) / batch_size)
    start = time.perf_counter()
    reader.nla.explain(vectors, max_new_tokens=index.max_new_tokens, batch_size=batch_size)
    seconds = time.perf_counter() - start
    return len(vectors) / seconds, flops / seconds / matmul_peak()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--explain-docs", type=int, default=0)
    args = parser.parse_args()
    reader = load_index_reader("default", IndexSettings())
    docs = load_corpus("default", limit=args.docs)
    cfg = ExtractConfig(out=Path("unused"), min_position=1)
    settings = IndexSettings(corpus="default", max_docs=args.docs)
    with tempfile.TemporaryDirectory() as scratch:
        time_extract(reader, docs[:8], cfg)  # warm-up
        timings = {"extract": [], "index": []}
        for _ in range(args.repeats):  # alternated, so a loaded machine slows both alike
            timings["extract"].append(time_extract(reader, docs, cfg))
            timings["index"].append(time_index(reader, settings, Path(scratch) / "index"))
        best = {name: min(values) for name, values in timings.items()}
        print(f"{args.docs} documents: extract {args.docs / best['extract']:.2f} docs/s, index --explain none "
              f"{args.docs / best['index']:.2f} docs/s; ratio index/extract {best['extract'] / best['index']:.2f}x")
        if args.explain_docs:
            explained = load_index_reader("default", IndexSettings(explain="3"))
            tier = IndexSettings(corpus="default", max_docs=args.explain_docs, explain="3")
            seconds = time_index(explained, tier, Path(scratch) / "explained")
            print(f"--explain 3 on {args.explain_docs} documents: {3 * args.explain_docs / seconds:.2f} "
                  f"explanations/s ({seconds:.0f} s)")
            for batch in (16, 32):
                rate, share = generation_share(explained, 2 * batch, batch)
                print(f"AV generation at batch {batch}: {rate:.2f} activations/s, {share:.0%} of the fp32 matmul peak")


if __name__ == "__main__":
    main()
