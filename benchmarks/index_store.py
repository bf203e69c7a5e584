"""Compare embedded stores for the audit index: token positions with text (BM25) and fp16 activations (exact top-k).

Each row: rid, doc_id, position, role, token, context (~200 chars), explanation (~300 chars), score, label and a
d=576 fp16 activation. Data is synthetic and seeded (Zipf-distributed pseudo-words; 10 rare words planted in 5 rows
each). For every size in --rows and every store it measures: disk MB per 100k positions, build rate (insert +
index, rows/s), median latency of 10 BM25 queries over `explanation` (top 20; "rare OR common" word pairs) and of
10 exact vector queries (top 20 by inner product, fp32 query), unfiltered and with role = 'assistant', after one
warm-up; and correctness: vector top-20 overlap with an exact numpy reference, and whether each BM25 top 20 holds
all 5 rows carrying the planted rare word.

Stores: sqlite FTS5 (stdlib) + activations in an fp16 .npy memmap scanned with torch; the same sqlite text + faiss
IndexScalarQuantizer(QT_fp16, inner product; "build" = adding the .npy to it); lancedb (native FTS, flat search over
float16); duckdb (parquet with float16 vectors, array_inner_product; FTS from the duckdb-ext-fts wheel, never INSTALL).
Extra deps, not in pyproject: lancedb==0.40.0 duckdb==1.4.4 duckdb-ext-fts==1.4.4.20260205 faiss-cpu==1.15.1

    nice -n 5 unshare -n .venv/bin/python benchmarks/index_store.py --rows 10000,1000000   # unshare -n: no network
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings

os.environ.update(OMP_NUM_THREADS="2", LANCE_CPU_THREADS="2", LANCEDB_LOG="error")
import numpy as np  # noqa: E401,E402
import pyarrow as pa
import pyarrow.parquet as pq
import torch

D, K, CHUNK, NQ = 576, 20, 100_000, 10
RARE = [f"zyzzq{c}x" for c in "abcdefghij"]  # planted in 5 rows each
warnings.filterwarnings("ignore", message=".*not writable.*")
warnings.filterwarnings("ignore", category=DeprecationWarning)  # lancedb: create_fts_index


def vocabulary(rng: np.random.Generator, n: int = 4000) -> tuple[list[str], np.ndarray]:
    syl = [c + v for c in "bcdfghklmnprstvw" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syl, rng.integers(1, 4))))
    words_l = sorted(words)
    rng.shuffle(words_l)
    p = 1.0 / np.arange(10, n + 10)  # Zipf-like frequencies
    return words_l, p / p.sum()


def planted(n: int) -> dict[int, str]:
    return {(j * 7919 + m * (n // 5)) % n: w for j, w in enumerate(RARE) for m in range(5)}


def make_batch(i0: int, m: int, vocab: list[str], p: np.ndarray, plant: dict[int, str]) -> pa.RecordBatch:
    rng = np.random.default_rng(1000 + i0)
    lens = rng.integers(40, 61, m)
    idx = rng.choice(len(vocab), int(lens.sum()) + 43 * m, p=p)
    w = [vocab[i] for i in idx]
    ends, extra0 = np.cumsum(lens), int(lens.sum())
    ex, ctx, tok = [], [], []
    for r in range(m):
        body = " ".join(w[ends[r] - lens[r]:ends[r]]) + (" " + plant[i0 + r] if i0 + r in plant else "")
        t, a, b, *c = w[extra0 + 43 * r:extra0 + 43 * (r + 1)]
        ex.append(f'The text is {body}. The last token is "{t}". Next it expects "{a}" or "{b}".')
        ctx.append(" ".join(c))
        tok.append(t)
    rid = np.arange(i0, i0 + m)
    vec = rng.standard_normal((m, D), dtype=np.float32).astype(np.float16)
    return pa.record_batch({
        "rid": rid, "doc_id": [f"doc{i // 256:06d}" for i in rid], "position": rid % 256,
        "role": np.array(["user", "assistant", "system"])[rng.choice(3, m, p=[0.45, 0.45, 0.1])],
        "token": tok, "context": ctx, "explanation": ex, "score": rng.random(m), "label":
        np.array(["faithful", "unfaithful", "unclear"])[rng.integers(0, 3, m)],
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), D)})


def vecs(batch: pa.RecordBatch) -> np.ndarray:
    return batch["vec"].values.to_numpy().reshape(-1, D)


def du(*paths: str) -> int:
    return sum(os.path.getsize(p) if os.path.isfile(p) else
               sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(p) for f in fs) for p in paths)


class SqliteTorch:
    name = "sqlite FTS5 + fp16 .npy / torch"

    def __init__(self, d: str, n: int):
        self.db, self.npy, self.n, self.masks = f"{d}/audit.sqlite", f"{d}/acts.npy", n, {}
        self.files = [self.db, self.npy]
        self.con = sqlite3.connect(self.db)
        self.con.executescript("pragma journal_mode=off; pragma synchronous=off; create virtual table docs using fts5("
                               "explanation, doc_id unindexed, position unindexed, role unindexed, token unindexed, "
                               "context unindexed, score unindexed, label unindexed);")
        self.mm = np.lib.format.open_memmap(self.npy, "w+", np.float16, (n, D))

    def add(self, b: pa.RecordBatch) -> None:
        cols = [b[c].to_pylist() for c in ("rid", "explanation", "doc_id", "position", "role", "token", "context",
                                           "score", "label")]
        self.con.executemany("insert into docs(rowid, explanation, doc_id, position, role, token, context, score, "
                             "label) values (?,?,?,?,?,?,?,?,?)", zip(*cols))
        self.mm[cols[0][0]:cols[0][0] + len(b)] = vecs(b)

    def finish(self) -> None:
        self.con.execute("insert into docs(docs) values('optimize')")
        self.con.commit()
        self.mm.flush()
        self.mm = np.load(self.npy, mmap_mode="r")

    def text(self, q: str) -> list[int]:
        return [r for r, in self.con.execute("select rowid from docs where docs match ? order by rank limit ?",
                                              (" OR ".join(q.split()), K))]

    def mask(self, role: str) -> torch.Tensor:  # True where the row does NOT have this role
        if role not in self.masks:
            roles = np.array([r for r, in self.con.execute("select role from docs order by rowid")])
            self.masks[role] = torch.from_numpy(roles != role)
        return self.masks[role]

    def vec(self, q: np.ndarray, role: str | None = None) -> list[int]:
        qt, scores, step = torch.from_numpy(q), torch.empty(self.n), 16384
        for a in range(0, self.n, step):
            scores[a:a + step] = torch.from_numpy(self.mm[a:a + step]).float() @ qt
        if role:
            scores.masked_fill_(self.mask(role), float("-inf"))
        return scores.topk(K).indices.tolist()


class SqliteFaiss:
    name = "sqlite FTS5 + faiss SQfp16 (from the .npy)"

    def __init__(self, base: SqliteTorch):
        import faiss
        faiss.omp_set_num_threads(2)
        self.faiss, self.base, self.masks = faiss, base, {}
        self.files, self.text = base.files, base.text  # same FTS5 table; no files of its own (built from .npy)
        self.index = faiss.IndexScalarQuantizer(D, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)

    def build(self) -> None:
        for a in range(0, self.base.n, CHUNK):
            self.index.add(np.asarray(self.base.mm[a:a + CHUNK], dtype=np.float32))

    def vec(self, q: np.ndarray, role: str | None = None) -> list[int]:
        params = None
        if role:
            if role not in self.masks:
                bits = np.packbits(~self.base.mask(role).numpy(), bitorder="little")
                self.masks[role] = (bits, self.faiss.IDSelectorBitmap(self.base.n, self.faiss.swig_ptr(bits)))
            params = self.faiss.SearchParameters(sel=self.masks[role][1])
        return self.index.search(q[None], K, params=params)[1][0].tolist()


class Lance:
    name = "lancedb (native FTS + flat f16)"

    def __init__(self, d: str, n: int):
        import lancedb
        self.db, self.t, self.files = lancedb.connect(f"{d}/lance"), None, [f"{d}/lance"]

    def add(self, b: pa.RecordBatch) -> None:
        tab = pa.Table.from_batches([b])
        if self.t is None:
            self.t = self.db.create_table("audit", tab)
        else:
            self.t.add(tab)

    def finish(self) -> None:
        self.t.create_fts_index("explanation")

    def text(self, q: str) -> list[int]:
        return self.t.search(q, query_type="fts").select(["rid"]).limit(K).to_arrow()["rid"].to_pylist()

    def vec(self, q: np.ndarray, role: str | None = None) -> list[int]:
        s = self.t.search(q, vector_column_name="vec", query_type="vector").distance_type("dot").select(["rid"])
        if role:
            s = s.where(f"role = '{role}'", prefilter=True)
        return s.limit(K).to_arrow()["rid"].to_pylist()


class Duck:
    name = "duckdb (parquet f16 + fts ext wheel)"

    def __init__(self, d: str, n: int):
        self.pq, self.dbf, self.w = f"{d}/audit.parquet", f"{d}/audit.duckdb", None
        self.files = [self.pq, self.dbf]

    def add(self, b: pa.RecordBatch) -> None:
        self.w = self.w or pq.ParquetWriter(self.pq, b.schema)
        self.w.write_batch(b, row_group_size=CHUNK)

    def finish(self) -> None:
        import duckdb  # noqa: E401  (duckdb_ext: the namespace package duckdb-ext-fts installs)
        import duckdb_ext
        self.w.close()
        ext_dir = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
        self.con = duckdb.connect(self.dbf, config={"autoinstall_known_extensions": False, "threads": 2,
                                                    "extension_directory": ext_dir, "memory_limit": "4GB"})
        self.con.execute("load fts")
        self.con.execute(f"create table docs as select rid, explanation from read_parquet('{self.pq}')")
        self.con.execute("pragma create_fts_index('docs', 'rid', 'explanation')")
        self.con.execute("checkpoint")

    def text(self, q: str) -> list[int]:
        return [r[0] for r in self.con.execute(
            "select rid from (select rid, fts_main_docs.match_bm25(rid, ?) s from docs) where s is not null "
            "order by s desc limit ?", [q, K]).fetchall()]

    def vec(self, q: np.ndarray, role: str | None = None) -> list[int]:
        where = f"where role = '{role}'" if role else ""
        return [r[0] for r in self.con.execute(
            f"select rid from read_parquet('{self.pq}') {where} order by array_inner_product("
            f"vec::FLOAT[{D}], ?::FLOAT[{D}]) desc limit {K}", [q.tolist()]).fetchall()]


def median_ms(fn, queries) -> float:
    fn(queries[0])  # warm-up
    times = [(time.perf_counter(), fn(q), time.perf_counter()) for q in queries]
    return 1000 * statistics.median(t1 - t0 for t0, _, t1 in times)


def measure(store, n: int, build_s: float, texts, plant, qv, ref, ref_f) -> dict:
    text_ok = sum(all(r in store.text(t) for r, w in plant.items() if w == t.split()[0]) for t in texts)
    agree = min([len(set(store.vec(q)) & set(r)) for q, r in zip(qv[:3], ref)] +
                [len(set(store.vec(q, "assistant")) & set(r)) for q, r in zip(qv[:3], ref_f)])
    return {"store": store.name, "rows": n, "mb_100k": du(*store.files) / 1e6 / (n / 1e5),
            "rate": n / build_s, "text_ms": median_ms(store.text, texts), "vec_ms": median_ms(store.vec, list(qv)),
            "vecf_ms": median_ms(lambda q: store.vec(q, "assistant"), list(qv)),
            "agree": f"{agree}/{K}", "bm25": f"{text_ok}/{len(texts)}"}


def run_size(n: int, root: str, vocab, p) -> list[dict]:
    plant, out = planted(n), []
    d = tempfile.mkdtemp(dir=root, prefix=f"n{n}_")
    rng = np.random.default_rng(7)
    common = [w for w in vocab[:200] if len(w) >= 6][:NQ]
    texts = [f"{RARE[j]} {common[j]}" for j in range(NQ)]
    qv = rng.standard_normal((NQ, D), dtype=np.float32)
    stores = [SqliteTorch(f"{d}", n), Lance(d, n), Duck(d, n)]
    build = [0.0] * len(stores)
    for i0 in range(0, n, CHUNK):  # one generated batch feeds every store; only the store's own work is timed
        b = make_batch(i0, min(CHUNK, n - i0), vocab, p, plant)
        for j, s in enumerate(stores):
            t = time.perf_counter()
            s.add(b)
            build[j] += time.perf_counter() - t
    for j, s in enumerate(stores):
        t = time.perf_counter()
        s.finish()
        build[j] += time.perf_counter() - t
        print(f"  built {s.name} at {n} rows in {build[j]:.1f}s", flush=True)
    # exact numpy reference over the parquet's vectors (3 queries, unfiltered and role = 'assistant')
    pf, scores, roles = pq.ParquetFile(stores[2].pq), [], []
    for b in pf.iter_batches(columns=["role", "vec"], batch_size=CHUNK):
        scores.append(vecs(b).astype(np.float32) @ qv[:3].T)
        roles.append(b["role"].to_numpy(zero_copy_only=False))
    scores, roles = np.concatenate(scores), np.concatenate(roles)
    ref = [np.argsort(-scores[:, i])[:K] for i in range(3)]
    ref_f = [np.argsort(-np.where(roles == "assistant", scores[:, i], -np.inf))[:K] for i in range(3)]
    fa = SqliteFaiss(stores[0])
    t = time.perf_counter()
    fa.build()
    fa_s = time.perf_counter() - t
    for s, bs in [(stores[0], build[0]), (fa, fa_s), (stores[1], build[1]), (stores[2], build[2])]:
        out.append(measure(s, n, bs, texts, plant, qv, ref, ref_f) | {"build_s": bs})
        print("  " + str(out[-1]), flush=True)
        if s is fa:
            fa.index.reset()  # free its RAM copy of the vectors before the next store
    stores[0].con.close()
    stores[2].con.close()
    shutil.rmtree(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="10000,1000000")
    ap.add_argument("--out", default=None, help="scratch folder (default /tmp); its temp subfolder is deleted")
    ap.add_argument("--results", default="/tmp/index_store_results.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out or "/tmp", exist_ok=True)
    root = tempfile.mkdtemp(prefix="index_store_", dir=args.out or "/tmp")  # only this folder gets deleted
    vocab, p = vocabulary(np.random.default_rng(0))
    rows = []
    try:
        for n in (int(x) for x in args.rows.split(",")):
            print(f"== {n} rows", flush=True)
            rows += run_size(n, root, vocab, p)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines = ["| rows | store | disk MB/100k | build s | build rows/s | BM25 ms | vec ms | vec+role ms | vec top20 "
             "vs exact (min) | BM25 planted hits |", "|" + "---|" * 10]
    lines += [f"| {r['rows']:,} | {r['store']} | {r['mb_100k']:.0f} | {r['build_s']:.1f} | {r['rate']:,.0f} | "
              f"{r['text_ms']:.1f} | {r['vec_ms']:.1f} | {r['vecf_ms']:.1f} | {r['agree']} | {r['bm25']} |"
              for r in rows]
    net = [name for _, name in socket.if_nameindex() if name != "lo"]
    cmd = (f"nice -n {os.nice(0)} " if os.nice(0) else "") + ("" if net else "unshare -n ") + " ".join(
        [os.path.relpath(sys.executable)] + sys.argv)
    lines += ["", "faiss row: the index lives in RAM, built from the .npy (build = that add; disk = the sqlite+npy "
              "files). Latencies: median of 10 queries after 1 warm-up; BM25 queries are 'rare OR common' word pairs."]
    text = "\n".join(lines) + f"\n\nCommand: `{cmd}` (torch threads 2; peak RSS " \
        f"{__import__('resource').getrusage(0).ru_maxrss / 1e6:.1f} GB)\n"
    print(text)
    with open(args.results, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
