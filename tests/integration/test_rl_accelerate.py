"""`nla rl` on two CPU processes (accelerate, gloo): the batch is split, gradients are averaged, and both
processes end with the same weights; the main process alone writes the run."""

import json

import pytest
import torch
from conftest import write_toy_pairs
from safetensors.torch import load_file

from nla.rl.config import RLConfig
from nla.train.ar import train_ar
from nla.train.av import train_av
from nla.train.config import ARTrainConfig, AVTrainConfig

pytestmark = pytest.mark.slow


def _train_on_each_process(cfg: RLConfig, dump_dir):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from nla.rl.trainer import rl

    # The forked process inherits the parent's single-process state (the SFT stages created it); a real
    # `accelerate launch` starts fresh processes, so start fresh here too.
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    result = rl(cfg, accelerator=accelerator, progress=False)
    trainer = result["trainer"]
    weights = {f"av.{k}": v for k, v in trainer.policy.verbalizer.model.state_dict().items()}
    weights.update({f"ar.{k}": v for k, v in trainer.nla.reconstructor.state_dict().items()})
    torch.save(weights, dump_dir / f"weights-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()


def test_two_processes_end_with_identical_weights(tmp_path, tiny_llama, monkeypatch):
    from accelerate import debug_launcher

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    data = write_toy_pairs(tmp_path / "pairs.parquet", ["river", "python", "music", "bread"], rows=64, noise=0.3,
                           template="about {word}")[0]
    train_av(AVTrainConfig(data=data, out=tmp_path / "nla", model=str(tiny_llama), layer=1, lora_rank=0, lr=1e-2,
                           batch_size=16, epochs=20, checkpoint_every=1000), progress=False)
    train_ar(ARTrainConfig(data=data, out=tmp_path / "nla", model=str(tiny_llama), layer=1, lora_rank=4,
                           epochs=1, batch_size=16, checkpoint_every=1000), progress=False)
    cfg = RLConfig(nla=tmp_path / "nla", data=data, out=tmp_path / "rl", steps=3, batch_size=4, group_size=4,
                   max_response_tokens=30, lora_rank=8, av_lr=1e-2, ar_lr=1e-3, ar_lora_rank=4, checkpoint_every=2,
                   device="cpu")
    debug_launcher(_train_on_each_process, args=(cfg, tmp_path), num_processes=2)
    first, second = (torch.load(tmp_path / f"weights-{rank}.pt") for rank in (0, 1))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # DDP kept the replicas in step
    sft_av = load_file(tmp_path / "nla" / "av" / "model.safetensors")
    assert any(not torch.equal(first[f"av.{k}"], sft_av[k]) for k in sft_av)  # and they did train
    lines = [json.loads(line) for line in (tmp_path / "rl" / "rl_metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]  # one writer: each step logged once
    assert (tmp_path / "rl" / "av" / "nla_meta.yaml").exists() and (tmp_path / "rl" / "ar" / "nla_meta.yaml").exists()
