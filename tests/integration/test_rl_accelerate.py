"""`nla rl` on two CPU processes (accelerate, gloo): the batch is split, gradients are averaged, and both
processes end with the same weights; the main process alone writes the run."""

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from conftest import build_sft_nla, torchrun

pytestmark = pytest.mark.slow


# Run by each of the two processes torchrun starts (see conftest.torchrun for why not a fork).
WORKER = """
import sys
from pathlib import Path

import torch

from nla.rl.config import RLConfig
from nla.rl.run import rl

out, nla, data = (Path(a) for a in sys.argv[1:4])
cfg = RLConfig(nla=nla, data=data, out=out, steps=3, batch_size=4, group_size=4, max_response_tokens=30, lora_rank=8,
               av_lr=1e-2, ar_lr=1e-3, ar_lora_rank=4, checkpoint_every=2, device="cpu")
result = rl(cfg, progress=False)
trainer = result["trainer"]
weights = {f"av.{k}": v for k, v in trainer.policy.verbalizer.model.state_dict().items()}
weights.update({f"ar.{k}": v for k, v in trainer.nla.reconstructor.state_dict().items()})
torch.save(weights, out.parent / f"weights-{trainer.accelerator.process_index}.pt")
"""


def test_two_processes_end_with_identical_weights(tmp_path, tiny_llama, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nla, data = build_sft_nla(tmp_path, tiny_llama)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    launch = subprocess.run(
        [*torchrun(2), str(worker), str(tmp_path / "rl"), str(nla), str(data)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert launch.returncode == 0, launch.stderr[-4000:]
    first, second = (torch.load(tmp_path / f"weights-{rank}.pt") for rank in (0, 1))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # DDP kept the replicas in step
    sft_av = load_file(nla / "av" / "model.safetensors")
    assert any(not torch.equal(first[f"av.{k}"], sft_av[k]) for k in sft_av)  # and they did train
    lines = [json.loads(line) for line in (tmp_path / "rl" / "rl_metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]  # one writer: each step logged once
    # One writer: the merged AV (its SFT weights were fully fine-tuned) and the AR stacked on its SFT adapter.
    assert (tmp_path / "rl" / "av" / "nla_meta.yaml").exists() and \
        (tmp_path / "rl" / "ar_adapter" / "nla_meta.yaml").exists()
