"""Training state on disk: written atomically, so `kill -9` at any moment leaves the last complete state.

A state folder holds, for each trained part (SFT: one, "model"; RL: "av" and "ar", each
with its own optimizer), `{part}.trainable.safetensors` (the trainable tensors by name),
`{part}.optimizer.pt` and `{part}.scheduler.pt`; then `rng.pt` (torch, numpy and Python
RNG states) and `state.json` (step, settings).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nla.atomic import old_copy, swap_folder
from nla.changes import changed_settings, describe_changes
from nla.errors import NLAError
from nla.inputs import RESUME_FIX, STATE_DAMAGE, damaged_file
from nla.record_log import complete_records, write_records


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def save_training_state(folder: Path, module: torch.nn.Module, optimizer, scheduler, step: int, extra: dict) -> None:
    """The state of one trained part (the SFT stages)."""
    save_parts_state(folder, {"model": (module, optimizer, scheduler)}, step, extra)


def latest_state(folder: Path) -> Path | None:
    """The last complete state: the folder, or its previous copy if a kill fell between the two renames."""
    for candidate in (folder, old_copy(folder)):
        if (candidate / "state.json").exists():
            return candidate
    return None


def load_training_state(folder: Path, module: torch.nn.Module, optimizer, scheduler) -> dict:
    """Restore what save_training_state wrote into the given objects and the RNGs; returns state.json."""
    return load_parts_state(folder, {"model": (module, optimizer, scheduler)})


def save_parts_state(folder: Path, parts: dict[str, tuple], step: int, extra: dict) -> None:
    """Several (module, optimizer, scheduler) parts keyed by name, plus the RNGs, as one atomic state."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, (module, optimizer, scheduler) in parts.items():
        save_file(trainable_state(module), tmp / f"{name}.trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / f"{name}.optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / f"{name}.scheduler.pt")
    torch.save({"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
               tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
    swap_folder(tmp, folder)  # the new state is complete before the old one goes


def load_parts_state(folder: Path, parts: dict[str, tuple]) -> dict:
    """Restore what save_parts_state wrote into the given parts and the RNGs; returns state.json."""
    for name, (module, optimizer, scheduler) in parts.items():
        tensors = load_file(folder / f"{name}.trainable.safetensors")
        _, unexpected = module.load_state_dict(tensors, strict=False)
        if unexpected:
            raise RuntimeError(f"checkpoint {folder} holds unknown {name} tensors: {unexpected[:3]}")
        optimizer.load_state_dict(torch.load(folder / f"{name}.optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(folder / f"{name}.scheduler.pt", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=False)  # our own file: numpy/python states are not tensors
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return json.loads((folder / "state.json").read_text())


# ---------------------------------------------------------------- resuming: one way for SFT and RL


def resume_from(state_dir: Path, settings: dict, load, *, run: str = "a run", state: str = "a saved training state",
                volatile: tuple[str, ...] = ()) -> int:
    """The step of the last complete state in `state_dir` (0 when there is none), after `load(found)` has
    read its tensors back. A state saved with other settings (those in `volatile` aside; a setting added
    since, at None, matches) is refused before any tensor is touched."""
    found = latest_state(state_dir)
    if not found:
        return 0
    with damaged_file(found, state, RESUME_FIX):
        before = json.loads((found / "state.json").read_text()).get("settings") or {}
    before = {k: v for k, v in before.items() if k not in volatile}
    if changed_settings(before, settings):
        raise NLAError(f"{state_dir.parent} holds {run} with other settings ({describe_changes(before, settings)}); "
                       "use the same settings to resume, or pass --overwrite to start over")
    with damaged_file(found, state, RESUME_FIX, also=STATE_DAMAGE):
        return load(found)["step"]


def truncate_log(path: Path, step: int) -> None:
    """Drop the records logged after a resumed state's step (those steps run again), and a last line a kill
    cut short."""
    if Path(path).exists():
        write_records(path, [r for r in complete_records(path) if r.get("step", 0) <= step])


def guarded_step(accelerator, loss, params, optimizer, scheduler, max_grad_norm: float) -> tuple[float, bool]:
    """Backward, clip, and an optimizer step unless the gradient is not finite (it would poison the weights:
    the step is skipped and reported); the schedule moves on either way. Returns (grad norm, finite)."""
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm)
    finite = bool(torch.isfinite(torch.as_tensor(grad_norm)))  # averaged already: every process agrees
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return float(grad_norm), finite
