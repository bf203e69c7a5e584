"""`nla rl` killed with SIGKILL mid-run resumes to the uninterrupted result (marker `slow`)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import build_sft_nla

pytestmark = pytest.mark.slow


def nla_rl(nla, data, out):
    args = [sys.executable, "-m", "nla.cli", "rl", "--nla", str(nla), "--data", str(data), "--out", str(out),
            "--steps", "8", "--batch-size", "2", "--group-size", "4", "--max-response-tokens", "30",
            "--lora-rank", "8", "--av-lr", "0.01", "--ar-lr", "0.001", "--ar-lora-rank", "4",
            "--checkpoint-every", "2", "--device", "cpu"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path, tiny_llama):
    nla, data = build_sft_nla(tmp_path, tiny_llama)
    reference = nla_rl(nla, data, tmp_path / "ref")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    out = tmp_path / "killed"
    run = nla_rl(nla, data, out)
    deadline = time.time() + 120
    state = out / "rl_state" / "state.json"
    while not (state.exists() and json.loads(state.read_text())["step"] >= 4):
        assert run.poll() is None and time.time() < deadline, "finished or stalled before it could be killed"
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (out / "av").exists()

    rerun = nla_rl(nla, data, out)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    # The SFT AV was fully fine-tuned (merged av/); RL's AR LoRA is stacked onto the SFT AR's adapter.
    for part in ("av/model.safetensors", "ar_adapter/adapter_model.safetensors", "ar_adapter/value_head.safetensors"):
        a, b = load_file(tmp_path / "ref" / part), load_file(out / part)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), part
    steps = [json.loads(line)["step"] for line in (out / "rl_metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # every step logged exactly once across the kill
