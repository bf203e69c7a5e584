"""The training loop shared by the SFT stages: a step function in, resumable training out.

A stage supplies `loss_at(step, model, share) -> loss tensor` (it owns its data order, so a
resumed run sees the same batches; `model` is the module to call, wrapped for several
processes; `share(rows)` is this process's part of a batch) and the module whose
trainable tensors are saved. The loop does the rest: AdamW with linear warmup and cosine
decay to 10%, gradient clipping, skipping (and logging) non-finite steps, metrics as JSON
lines, a progress bar, and an atomic training state every N steps that a rerun resumes from.

Several processes (`accelerate launch --num_processes N -m nla.cli train-ar ...`, or
torchrun) each take 1/N of every batch; accelerate averages the gradients (DDP: gloo on
CPU, NCCL on GPUs), so N processes follow the same run as one, N times faster. The main
process alone writes state, metrics and the exported model.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from nla.models.loading import pick_device
from nla.record_log import append_records
from nla.train.checkpoint import guarded_step, load_training_state, resume_from, save_training_state, truncate_log


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def start_processes(device: str):
    """The accelerate handle of this process: one of N under `accelerate launch` / torchrun, else the only one."""
    from accelerate import Accelerator

    # Device placement stays ours (process_device): accelerate would move a one-process run to cuda:0.
    return Accelerator(cpu=pick_device(device).type == "cpu", device_placement=False)


def process_device(accelerator, device: str) -> torch.device:
    """Where this process trains: accelerate's pick with several processes, else the --device asked for."""
    return accelerator.device if accelerator.num_processes > 1 else pick_device(device)


def train_loop(module: torch.nn.Module, loss_at: Callable, *, accelerator, total_steps: int, lr: float,
               warmup_fraction: float, max_grad_norm: float, checkpoint_every: int, out: Path, settings: dict,
               overwrite: bool, stage: str, progress: bool = True) -> int:
    """Run (or resume) `total_steps` optimizer steps on the module's trainable parameters; returns the step count.

    The state and metrics are named after the stage (OUT/ar_state/, OUT/ar_metrics.jsonl), so the AR and
    AV stages can share one NLA folder."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # Not handed to accelerate: its wrapper steps a scheduler once per process, which would bend the schedule.
    scheduler = cosine_with_warmup(optimizer, total_steps, max(1, int(warmup_fraction * total_steps)))
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back from state.json
    state_dir, metrics_path = out / f"{stage}_state", out / f"{stage}_metrics.jsonl"
    main = accelerator.is_main_process
    if overwrite and main:
        shutil.rmtree(state_dir, ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    step = resume_from(state_dir, settings, lambda found: load_training_state(found, module, optimizer, scheduler))
    if main:
        truncate_log(metrics_path, step)
    model, optimizer = accelerator.prepare(module, optimizer)  # several processes: DDP averages gradients
    rank, world = accelerator.process_index, accelerator.num_processes

    def share(rows: list) -> list:
        return rows[rank::world]

    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=total_steps, initial=step, desc=f"train-{stage}", unit="step", disable=not (progress and main))
    start = time.time()
    model.train()
    while step < total_steps:
        loss = loss_at(step, model, share)
        grad_norm, finite = guarded_step(accelerator, loss, params, optimizer, scheduler, max_grad_norm)
        step += 1
        mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
        if main:
            append_records(metrics_path, [{"step": step, "loss": mean_loss, "grad_norm": grad_norm,
                                           "skipped": not finite, "lr": scheduler.get_last_lr()[0],
                                           "seconds": round(time.time() - start, 2)}])
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
        if (step % checkpoint_every == 0 or step == total_steps) and main:
            save_training_state(state_dir, module, optimizer, scheduler, step, {"settings": settings})
    bar.close()
    accelerator.wait_for_everyone()
    module.eval()
    return step
