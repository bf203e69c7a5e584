"""`nla rl`: one GRPO run, from its checks to its export: refuse what cannot run (a finished run, a batch that
cannot split or fit), resume from the last saved state with the same settings, then step the Trainer
(rl/trainer.py), logging metrics and samples, evaluating every eval_every steps, and export at the end."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from nla.autoencoder.hub import resolve_nla
from nla.autoencoder.shared import ADAPTER_DIRS, CALIBRATION_FILE, trained
from nla.errors import NLAError
from nla.models.adapters import text_config
from nla.models.memory import check_batch_fits, optimizer_bytes, rl_sample_bytes
from nla.record_log import append_records
from nla.rl.config import RLConfig
from nla.rl.export import export_rl
from nla.rl.rewards import RewardFn
from nla.rl.rollout import RolloutBackend
from nla.rl.trainer import METRICS_FILE, SAMPLES_FILE, STATE_DIR, Trainer
from nla.train.checkpoint import load_parts_state, resume_from, save_parts_state, truncate_log
from nla.train.loop import start_processes

# Settings that do not change the trajectory: a run may resume under other values (e.g. more steps, or a
# copy of its state in another folder).
VOLATILE_SETTINGS = ("out", "overwrite", "checkpoint_every", "sample_every", "eval_every", "device", "steps")


def _settings(cfg: RLConfig, processes: int) -> dict:
    settings = {**asdict(cfg), "processes": processes}
    for volatile in VOLATILE_SETTINGS:
        settings.pop(volatile)
    return json.loads(json.dumps(settings, default=str))


def _resume(trainer: Trainer, settings: dict) -> int:
    return resume_from(trainer.cfg.out / STATE_DIR, settings, lambda found: load_parts_state(found, trainer.parts()),
                       run="an RL run", state="a saved RL state", volatile=VOLATILE_SETTINGS)


def _start(cfg: RLConfig, accelerator) -> None:
    """Refuse to replace a finished run, or a batch that cannot split over the processes."""
    resolve_nla(cfg.nla, av=cfg.nla_av, ar=cfg.nla_ar)  # a bad --nla fails before any state is touched
    finished = trained(cfg.out, "av") and trained(cfg.out, "ar")  # the AR (adapter or folder) is written last
    if finished and not cfg.overwrite:
        raise NLAError(f"{cfg.out} already holds a finished RL run; pass --overwrite or another --out")
    if cfg.batch_size % accelerator.num_processes:
        raise NLAError(f"batch-size {cfg.batch_size} does not split over {accelerator.num_processes} processes; "
                       "pass a multiple of the process count")


def _check_memory(trainer: Trainer) -> None:
    """Refuse a batch that clearly does not fit in memory (see models/memory.py), before anything is written."""
    cfg, verbalizer = trainer.cfg, trainer.policy.verbalizer
    per_sample = rl_sample_bytes(text_config(verbalizer.model.config), prompt_tokens=len(verbalizer.prompt),
                                 response_tokens=cfg.max_response_tokens, reference=cfg.kl_coef > 0,
                                 bytes_per_value=next(verbalizer.model.parameters()).element_size())
    check_batch_fits(cfg.group_size * per_sample, cfg.batch_size,
                     optimizer_bytes(trainer.policy.params) + optimizer_bytes(trainer.ar_params),
                     trainer.accelerator.device, processes=trainer.accelerator.num_processes, flag="--batch-size",
                     what=f"--group-size {cfg.group_size} explanations of up to {cfg.max_response_tokens} tokens each")


def _clear_old_run(cfg: RLConfig, accelerator) -> None:
    """--overwrite: the old run goes before the new one starts, so a kill leaves no finished-looking mix
    (main process only); its calibration.json, made from the old weights, goes with it."""
    if cfg.overwrite and accelerator.is_main_process:
        for name in (STATE_DIR, "av", "ar", *ADAPTER_DIRS.values()):
            shutil.rmtree(cfg.out / name, ignore_errors=True)
        for name in (METRICS_FILE, SAMPLES_FILE, CALIBRATION_FILE):
            (cfg.out / name).unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def rl(cfg: RLConfig, *, reward: RewardFn | None = None, backend: RolloutBackend | None = None,
       accelerator=None, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume) GRPO; returns the step count and the first and last held-out evaluations.

    `reward` replaces the reconstruction reward (tests use a toy one); `stop_after` ends the call after
    that many steps without exporting, as a kill would (tests of resume use it)."""
    accelerator = accelerator or start_processes(cfg.device)
    _start(cfg, accelerator)
    trainer = Trainer(cfg, reward, accelerator, backend)
    _check_memory(trainer)
    _clear_old_run(cfg, accelerator)
    settings = _settings(cfg, accelerator.num_processes)
    step = _resume(trainer, settings)
    main = accelerator.is_main_process
    metrics_path, samples_path = cfg.out / METRICS_FILE, cfg.out / SAMPLES_FILE
    if main:
        cfg.out.mkdir(parents=True, exist_ok=True)
        truncate_log(metrics_path, step)
        truncate_log(samples_path, step)
    evaluations = {}
    if step == 0 and trainer.eval_golds is not None and main:
        evaluations[0] = trainer.evaluate()
        _append(metrics_path, {"step": 0, **evaluations[0]})
    last = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc="rl", unit="step", disable=not (progress and main))
    while step < last:
        record, samples = trainer.step(step)
        step += 1
        if main:
            if trainer.eval_golds is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                evaluations[step] = trainer.evaluate()
                record.update(evaluations[step])
            _append(metrics_path, {"step": step, **record, "lr": trainer.policy.scheduler.get_last_lr()[0]})
            if step % cfg.sample_every == 0 or step == 1:
                for sample in samples:
                    _append(samples_path, sample)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            if main:
                save_parts_state(cfg.out / STATE_DIR, trainer.parts(), step, {"settings": settings})
            accelerator.wait_for_everyone()
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward']:.3f}", fail=f"{record['failure_rate']:.2f}")
    bar.close()
    if step == cfg.steps:
        export_rl(trainer, step, write=main)
        accelerator.wait_for_everyone()
    return {"steps": step, "out": str(cfg.out), "evaluations": evaluations, "trainer": trainer}


def _append(path: Path, record: dict) -> None:
    append_records(path, [record])
