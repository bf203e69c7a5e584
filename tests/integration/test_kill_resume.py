"""`nla extract` killed with SIGKILL mid-run resumes to exactly the uninterrupted result (marker `slow`)."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from nla.data.sampling import SPLITS

pytestmark = pytest.mark.slow


def nla_extract(out, model, corpus):
    args = [sys.executable, "-m", "nla.cli", "extract", "--out", str(out), "--model", str(model),
            "--corpus", str(corpus), "--layer", "1", "--min-position", "2", "--chunk-docs", "2",
            "--batch-tokens", "64"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture()
def long_corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    words = "the river carries water from the hills to the sea and feeds the farms along its banks".split()
    with path.open("w") as f:
        for i in range(300):
            f.write(json.dumps({"id": f"d{i}", "text": " ".join(words[(i + k) % len(words)] for k in range(60))}) + "\n")
    return path


def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path, tiny_llama, long_corpus):
    reference = nla_extract(tmp_path / "ref", tiny_llama, long_corpus)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    out = tmp_path / "killed"
    run = nla_extract(out, tiny_llama, long_corpus)
    deadline = time.time() + 120
    while len(list((out / ".partial").glob("chunk-*.parquet"))) < 3:
        assert run.poll() is None and time.time() < deadline, "finished or stalled before it could be killed"
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (out / "summary.json").exists()

    rerun = nla_extract(out, tiny_llama, long_corpus)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    summary = json.loads((out / "summary.json").read_text())
    assert not list(out.glob(".*")), "temp files of the killed run were left behind"
    assert 0 < summary["tokens_computed_this_run"] < summary["tokens"]
    for split in SPLITS:
        assert pq.read_table(out / f"{split}.parquet").equals(pq.read_table(tmp_path / "ref" / f"{split}.parquet"))
