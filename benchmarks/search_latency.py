"""nla search's latency over a large index: a synthetic shard of N rows written through the real store, searched
by the real search, with an AR stand-in that returns a fixed random query vector (the AR's own pass, ~50 ms on
the CPU, is timed separately by any explain benchmark and is the same at every index size).

    python benchmarks/search_latency.py --rows 10000,1000000 [--out /tmp/search-bench]

Rows: d = 576 fp16 activations (SmolLM2's width), explanations of 40-60 words drawn from a 5,000-word vocabulary
(Zipf), one of 8 roles. Reports the median of 5 searches after a warm-up: positions by text, by activation (the
fp32 scan up to EXACT_ROWS a shard, fp16 above), by both, by activation with --centre and a role filter, and
documents (--docs) by activation. Goal (issue 19): <= 1 s for either signal at 1M rows on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nla.atomic import write_json
from nla.reading import search as search_module
from nla.reading.index_store import INDEX_JSON, ShardWriter, open_index, shard_name
from nla.reading.search import SearchQuery, search

D, WORDS, ROLES = 576, 5000, ("assistant", "user", "system", "text", "a", "b", "c", "d")


def fixed_direction(nla, q, mean):
    """Stands in for the AR's reconstruction of the query: a fixed random vector (its cost is not measured here)."""
    return torch.randn(D, generator=torch.Generator().manual_seed(0))


def build(folder: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(WORDS)])
    writer = ShardWriter(folder / shard_name(0, 1), D)
    chunk, docs = 50_000, 0
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        words = rng.zipf(1.3, size=(n, 50)) % WORDS
        doc_ids = [f"doc-{(start + i) // 40}" for i in range(n)]
        batch = [{"doc_id": d, "source": "s", "genre": "g", "topic": "", "position": i % 40,
                  "role": ROLES[i % len(ROLES)], "token": "x", "context": "…⟦x⟧…",
                  "explanation": " ".join(vocab[w]), "score": 0.0, "label": "Medium", "flagged": 0, "claims": []}
                 for i, (d, w) in enumerate(zip(doc_ids, words))]
        writer.commit(sorted(set(doc_ids) - writer.done), batch, rng.standard_normal((n, D)).astype(np.float16))
        docs += len(set(doc_ids))
    writer.finish()
    write_json(folder / INDEX_JSON, {"schema": "nla.index", "schema_version": 1, "nla": "synthetic", "layer": 20,
                                     "d_model": D, "processes": 1, "explain": "all"})


def timed(index, q: SearchQuery) -> float:
    search(index, None, q)  # warm-up (pages the matrix in)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        search(index, None, q)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,1000000")
    parser.add_argument("--out", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    args = parser.parse_args()
    torch.set_num_threads(2)
    search_module.query_direction = fixed_direction
    scratch = args.out or Path(tempfile.mkdtemp(prefix="search-bench-"))
    queries = {"text": SearchQuery(query="w7 w123", by="text"),
               "activation": SearchQuery(query="q", by="activation"),
               "both": SearchQuery(query="w7 w123", by="both"),
               "activation --centre --role": SearchQuery(query="q", by="activation", centre=True,
                                                         filters={"role": "assistant"}),
               "documents by activation": SearchQuery(query="q", by="activation", docs=True)}
    print("| rows | build s | " + " | ".join(f"{name} (s)" for name in queries) + " |")
    print("|---" * (len(queries) + 2) + "|")
    try:
        for rows in (int(r) for r in args.rows.split(",")):
            folder = scratch / f"rows-{rows}"
            shutil.rmtree(folder, ignore_errors=True)
            start = time.perf_counter()
            build(folder, rows)
            built = time.perf_counter() - start
            index = open_index(folder)
            cells = [f"{timed(index, q):.3f}" for q in queries.values()]
            index.close()
            print(f"| {rows:,} | {built:.0f} | " + " | ".join(cells) + " |", flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
