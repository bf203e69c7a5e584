"""`nla train-ar` and `nla train-av` on 2 CPU processes (torchrun, gloo) follow the 1-process run (marker `slow`).

Each process takes half of every batch and accelerate averages the gradients, so two
processes must end where one process with the whole batch ends (up to float rounding).
The AV's step runs the model twice before one backward (the prompt's shared prefix, then
every row from its cache), which DDP must sum like one forward.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import torchrun, write_toy_pairs

pytestmark = pytest.mark.slow

STEPS_ARGS = ["--layer", "1", "--lora-rank", "4", "--batch-size", "16", "--epochs", "1", "--lr", "1e-2",
              "--checkpoint-every", "2"]


STAGE_ARGS = {"ar": [], "av": ["--injection", "residual"]}  # the residual hooks under DDP too


def train(stage: str, out, data, model, processes: int) -> subprocess.CompletedProcess:
    nla = ["-m", "nla.cli", f"train-{stage}", "--data", str(data), "--out", str(out), "--model", str(model),
           "--device", "cpu", *STEPS_ARGS, *STAGE_ARGS[stage]]
    launcher = torchrun(processes) if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(launcher + nla, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.parametrize("stage", ["ar", "av"])
def test_two_gloo_processes_match_one(tmp_path, tiny_llama, stage):
    data, _, _ = write_toy_pairs(tmp_path / "pairs.parquet", ["river", "bread", "music"], 64, 0.3, "about {word}")
    one = train(stage, tmp_path / "one", data, tiny_llama, 1)
    assert one.returncode == 0, one.stderr[-2000:]
    two = train(stage, tmp_path / "two", data, tiny_llama, 2)
    assert two.returncode == 0, two.stderr[:6000]

    metrics = [(tmp_path / run / f"{stage}_metrics.jsonl").read_text().splitlines() for run in ("one", "two")]
    losses = [[json.loads(line)["loss"] for line in lines] for lines in metrics]
    assert len(losses[0]) == len(losses[1]) == 4  # one metrics file, from the main process only
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
    assert losses[0][-1] < losses[0][0]  # it trained
    ours, theirs = (load_file(tmp_path / run / f"{stage}_adapter" / "adapter_model.safetensors")
                    for run in ("one", "two"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-4), name
