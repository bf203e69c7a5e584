"""`nla index` killed with SIGKILL mid-run resumes to the index an uninterrupted run writes (marker `slow`)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import build_tiny_nla
from nla.reading.index_store import open_index, shard_name

pytestmark = pytest.mark.slow


def nla_index(out, nla, model, corpus):
    args = [sys.executable, "-m", "nla.cli", "index", "--out", str(out), "--nla", str(nla), "--model", str(model),
            "--corpus", str(corpus), "--positions", "8", "--device", "cpu"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def committed(out) -> int:
    try:
        with sqlite3.connect(out / shard_name(0, 1) / "rows.sqlite") as db:
            return db.execute("SELECT count(*) FROM documents").fetchone()[0]
    except sqlite3.Error:
        return 0


def contents(out):
    index = open_index(out)
    shard = index.shards[0]
    keys = shard.db.execute("SELECT doc_id, position, token FROM positions ORDER BY id").fetchall()
    found = dict(zip(keys, np.asarray(shard.vectors)))
    index.close()
    return found, len(keys)


def test_kill_9_then_rerun_gives_the_uninterrupted_index(tmp_path, tiny_llama):
    corpus = tmp_path / "corpus.jsonl"
    words = "the river carries water from the hills to the sea and feeds the farms along its banks".split()
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(words[(i + k) % len(words)]
                                                                          for k in range(60))}) + "\n"
                              for i in range(400)))
    nla = build_tiny_nla(tmp_path / "nla", tiny_llama)
    reference = nla_index(tmp_path / "ref", nla, tiny_llama, corpus)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    out = tmp_path / "killed"
    run = nla_index(out, nla, tiny_llama, corpus)
    deadline = time.time() + 120
    while committed(out) < 48:  # three chunks of 16 documents
        assert run.poll() is None and time.time() < deadline, "finished or stalled before it could be killed"
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert committed(out) < 400

    rerun = nla_index(out, nla, tiny_llama, corpus)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    (ours, rows), (theirs, ref_rows) = contents(out), contents(tmp_path / "ref")
    assert rows == ref_rows == len(ours)  # nothing duplicated
    assert ours.keys() == theirs.keys()  # nothing lost
    for key in ours:
        assert np.array_equal(ours[key], theirs[key]), key
