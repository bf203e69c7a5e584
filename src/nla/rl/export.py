"""The end of an RL run: its AV and AR written where NLA.load finds them (stage rl).

Each RL LoRA is stacked with the SFT adapter it trained on top of into one adapter of the
summed rank (OUT/av_adapter, OUT/ar_adapter: megabytes, exact; `nla export OUT` merges
them). A half whose SFT weights came without an adapter (fully fine-tuned, or a released
folder) is written merged, as OUT/av or OUT/ar.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from nla.atomic import atomic_path
from nla.autoencoder.checkpoint import save_verbalizer
from nla.autoencoder.lora import merge_lora
from nla.autoencoder.nla import NLA
from nla.autoencoder.shared import ADAPTER_DIRS, is_adapter, write_stacked


def export_rl(trainer, steps: int, write: bool) -> None:
    """On the main process, write OUT/av_adapter and OUT/ar_adapter: each RL LoRA stacked with the SFT adapter
    it was trained on top of (megabytes; `nla export OUT` merges them). Then merge both adapters on every
    process, so all hold the final weights, and write a role that does not stack (an SFT NLA given as
    merged folders, or full fine-tuning) as a merged released folder, OUT/av or OUT/ar (stage rl)."""
    cfg, nla = trainer.cfg, trainer.nla
    verbalizer, ar = trainer.policy.verbalizer, nla.reconstructor
    training = {"loss_type": "grpo", "steps": steps, "group_size": cfg.group_size,
                "global_batch_size": cfg.batch_size * cfg.group_size, "kl_coef": cfg.kl_coef, "reward": cfg.reward}
    # trained_on lists every stage's data, SFT's first: eval reads the warm-start texts from it
    av_meta = replace(nla.av_meta, stage="rl", trained_on=[*nla.av_meta.trained_on, str(cfg.data)], created_at="",
                      parent_checkpoints=[str(nla.source.av)], training={**training, "lr": cfg.av_lr})
    ar_meta = replace(nla.ar_meta, stage="rl", trained_on=[*nla.ar_meta.trained_on, str(cfg.data)], created_at="",
                      parent_checkpoints=[str(nla.source.ar)], training={**training, "lr": cfg.ar_lr})
    stacked = {"av": None, "ar": None}
    parents = {role: _sft_adapter(nla, role) for role in ("av", "ar")}
    if write and cfg.lora_rank and parents["av"]:
        stacked["av"] = write_stacked(cfg.out, "av", verbalizer.model, "default", parents["av"], av_meta)
    if write and cfg.ar_lora_rank and parents["ar"]:
        stacked["ar"] = write_stacked(cfg.out, "ar", ar.backbone, "default", parents["ar"], ar_meta, ar.head)
    if cfg.lora_rank:
        verbalizer.model = merge_lora(verbalizer.model)
    if cfg.ar_lora_rank:
        ar.backbone = merge_lora(ar.backbone)
    verbalizer.model.eval()
    ar.eval()
    if not write:
        return
    if stacked["av"] is None:
        shutil.rmtree(cfg.out / ADAPTER_DIRS["av"], ignore_errors=True)  # a stale adapter would be read instead
        with atomic_path(cfg.out / "av") as tmp:
            save_verbalizer(tmp, verbalizer, av_meta)
            shutil.rmtree(cfg.out / "av", ignore_errors=True)  # a kill's leftover: the new folder replaces it
    if stacked["ar"] is None:  # the AR last: its folder marks the stage finished
        shutil.rmtree(cfg.out / ADAPTER_DIRS["ar"], ignore_errors=True)
        with atomic_path(cfg.out / "ar") as tmp:
            ar.save_released(tmp, nla.ar_tokenizer, ar_meta)
            shutil.rmtree(cfg.out / "ar", ignore_errors=True)


def _sft_adapter(nla: NLA, role: str) -> Path | None:
    """The SFT adapter RL's LoRA trained on top of: the folder it loaded, or (when an nla folder holds both,
    after `nla export`, and the merged copy was read) the adapter beside it, which holds the same weights."""
    loaded = nla.source.av if role == "av" else nla.source.ar
    if is_adapter(loaded):
        return loaded
    beside = nla.source.run / ADAPTER_DIRS[role] if nla.source.run is not None else None
    return beside if beside is not None and is_adapter(beside) else None
