"""`nla rl` killed with SIGKILL mid-run resumes to the uninterrupted result (marker `slow`)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import write_toy_pairs
from safetensors.torch import load_file

from nla.train.ar import train_ar
from nla.train.av import train_av
from nla.train.config import ARTrainConfig, AVTrainConfig

pytestmark = pytest.mark.slow


def nla_rl(nla, data, out):
    args = [sys.executable, "-m", "nla.cli", "rl", "--nla", str(nla), "--data", str(data), "--out", str(out),
            "--steps", "8", "--batch-size", "2", "--group-size", "4", "--max-response-tokens", "30",
            "--lora-rank", "8", "--av-lr", "0.01", "--ar-lr", "0.001", "--ar-lora-rank", "4",
            "--checkpoint-every", "2", "--device", "cpu"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path, tiny_llama):
    data = write_toy_pairs(tmp_path / "pairs.parquet", ["river", "python", "music", "bread"], rows=64, noise=0.3,
                           template="about {word}")[0]
    train_av(AVTrainConfig(data=data, out=tmp_path / "nla", model=str(tiny_llama), layer=1, lora_rank=0, lr=1e-2,
                           batch_size=16, epochs=20, checkpoint_every=1000), progress=False)
    train_ar(ARTrainConfig(data=data, out=tmp_path / "nla", model=str(tiny_llama), layer=1, lora_rank=4,
                           epochs=2, batch_size=16, checkpoint_every=1000), progress=False)
    reference = nla_rl(tmp_path / "nla", data, tmp_path / "ref")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    out = tmp_path / "killed"
    run = nla_rl(tmp_path / "nla", data, out)
    deadline = time.time() + 120
    state = out / "rl_state" / "state.json"
    while not (state.exists() and json.loads(state.read_text())["step"] >= 4):
        assert run.poll() is None and time.time() < deadline, "finished or stalled before it could be killed"
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (out / "av").exists()

    rerun = nla_rl(tmp_path / "nla", data, out)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    for part in ("av/model.safetensors", "ar/model.safetensors", "ar/value_head.safetensors"):
        a, b = load_file(tmp_path / "ref" / part), load_file(out / part)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), part
    steps = [json.loads(line)["step"] for line in (out / "rl_metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # every step logged exactly once across the kill
