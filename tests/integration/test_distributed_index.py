"""`nla index` under torchrun: 2 CPU processes (gloo) write two shards that read as the same index as 1 process
writes (marker `slow`): the same positions of the same documents, the same activations, and the same search."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import build_tiny_nla, torchrun
from nla.reading.index_store import open_index

pytestmark = pytest.mark.slow


def index(out, corpus, nla, model, processes: int) -> subprocess.CompletedProcess:
    command = ["-m", "nla.cli", "index", "--corpus", str(corpus), "--out", str(out), "--nla", str(nla),
               "--model", str(model), "--positions", "4", "--device", "cpu"]
    launcher = torchrun(processes) if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(launcher + command, capture_output=True, text=True, timeout=600, env=env)


def rows(folder):
    """(doc_id, position, role, token) -> fp16 activation, over every shard."""
    opened = open_index(folder)
    found = {}
    for shard in opened.shards:
        keys = shard.db.execute("SELECT doc_id, position, role, token FROM positions ORDER BY id").fetchall()
        found.update(zip(keys, np.asarray(shard.vectors)))
    opened.close()
    return found, len(opened.shards)


def test_two_gloo_processes_give_the_index_one_gives(tmp_path, tiny_llama, small_corpus):
    nla = build_tiny_nla(tmp_path / "nla", tiny_llama)
    one = index(tmp_path / "one", small_corpus, nla, tiny_llama, 1)
    assert one.returncode == 0, one.stderr[-2000:]
    two = index(tmp_path / "two", small_corpus, nla, tiny_llama, 2)
    assert two.returncode == 0, two.stderr[-4000:]
    (ours, shards_one), (theirs, shards_two) = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert (shards_one, shards_two) == (1, 2)
    assert ours.keys() == theirs.keys() and len(ours) > 40
    for key in ours:
        # fp16 of the same fp32 forward; batches differ in padding, so allow a rounding step
        assert np.allclose(ours[key].astype(np.float32), theirs[key].astype(np.float32), atol=2e-3, rtol=2e-3), key
    counts = [len(open_index(tmp_path / "two").shards[r].vectors) for r in range(2)]
    assert min(counts) > 0  # both processes took a share
