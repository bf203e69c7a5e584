"""Audit-index throughput: `nla index --explain none` against `nla extract` on the same documents, in one process.

    python benchmarks/index_throughput.py [--docs 128] [--repeats 2] [--explain-docs 8]

Both run the shipped NLA's target through block K over the same documents of the default corpus, with the same
length batching: extract keeps 8 sampled positions a document (its default), index keeps every position and
also stores each one's token, role and context in SQLite. The ratio of documents per second is the figure
(issue goal: index >= 0.8x extract). With --explain-docs N, the explained tier is timed too: positions read per
second with 3 explanations a document, batched across documents.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

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


if __name__ == "__main__":
    main()
