"""`nla train-ar`: supervised training of the reconstructor (AR) on (explanation, activation) pairs.

    nla train-ar --data runs/acts/explanations-offline/ar_sft.parquet --out runs/ar

The AR is the target's blocks 0..K with LoRA adapters (peft; `--lora-rank 0` trains
the blocks fully) plus the identity-initialised head. Loss: 2(1 - cos) between the
prediction and the activation. AdamW, linear warmup then cosine decay to 10% of
the learning rate, gradient clipping. The training state is saved atomically every
N steps and a rerun resumes from it; metrics go to OUT/metrics.jsonl. At the end the
LoRA weights are merged and OUT/ar/ is written in the released AR layout.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from tqdm import tqdm

from nla.atomic import atomic_path
from nla.autoencoder.meta import ModelMeta
from nla.autoencoder.nla import ar_input_ids
from nla.autoencoder.reconstructor import Reconstructor, reconstruction_mse
from nla.data.dataset import sidecar_path, vectors_of
from nla.errors import NLAError
from nla.models import load_target
from nla.models.activations import pad_right
from nla.train.checkpoint import latest_state, load_training_state, save_training_state
from nla.train.config import ARTrainConfig

AR_TEMPLATE = "A language model's thought, described in words:\n{explanation}\nThe thought described above is"
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _dataset(cfg: ARTrainConfig) -> tuple[list[str], torch.Tensor, dict]:
    if not cfg.data.exists():
        raise NLAError(f"{cfg.data} not found; run nla explain-data first and pass its ar_sft.parquet")
    table = pq.read_table(cfg.data)
    if "explanation" not in table.column_names:
        raise NLAError(f"{cfg.data} has no explanation column; pass the output of nla explain-data")
    meta = yaml.safe_load(sidecar_path(cfg.data).read_text()) if sidecar_path(cfg.data).exists() else {}
    return table.column("explanation").to_pylist(), torch.from_numpy(vectors_of(table).copy()), meta


def build_reconstructor(model_spec: str, layer: int | None, lora_rank: int, device: str):
    target = load_target(model_spec, device=device)
    layer = target.resolve_layer(layer)
    backbone = target.model.requires_grad_(False)
    if lora_rank:
        from peft import LoraConfig, inject_adapter_in_model

        # In place: the backbone keeps its class, with LoRA inside the blocks the AR runs.
        lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules=LORA_MODULES,
                          layers_to_transform=list(range(layer + 1)), lora_dropout=0.0)
        backbone = inject_adapter_in_model(lora, backbone)
    else:
        for block in target.layers[: layer + 1]:
            block.requires_grad_(True)
    return Reconstructor(backbone, layer), target


def _schedule(optimizer, total_steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_ar(cfg: ARTrainConfig, *, progress: bool = True) -> dict:
    texts, golds, meta = _dataset(cfg)
    extraction = meta.get("extraction") or {}
    model_spec = cfg.model or extraction.get("base_model")
    if not model_spec:
        raise NLAError(f"{cfg.data} does not name its model; pass --model")
    if (cfg.out / "ar" / "nla_meta.yaml").exists() and not cfg.overwrite:
        raise NLAError(f"{cfg.out} already holds a trained AR; pass --overwrite or another --out")
    torch.manual_seed(cfg.seed)
    ar, target = build_reconstructor(model_spec, cfg.layer if cfg.layer is not None else extraction.get("layer_index"),
                                     cfg.lora_rank, cfg.device)
    if golds.shape[1] != ar.d_model:
        raise NLAError(f"{cfg.data} holds d={golds.shape[1]} activations but {model_spec} has d_model {ar.d_model}")
    rows = ar_input_ids(target.tokenizer, texts, AR_TEMPLATE, target.adapter.requires_bos)
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = max(1, int(steps_per_epoch * cfg.epochs))
    params = [p for p in ar.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    scheduler = _schedule(optimizer, total, max(1, int(cfg.warmup_fraction * total)))
    settings = json.loads(json.dumps({**asdict(cfg), "model": model_spec, "rows": len(rows)}, default=str))
    settings.pop("overwrite")
    state_dir, metrics_path = cfg.out / "state", cfg.out / "metrics.jsonl"
    if cfg.overwrite:
        shutil.rmtree(state_dir, ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
    step = _resume(state_dir, metrics_path, settings, ar, optimizer, scheduler)
    cfg.out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(cfg.seed).permutation(np.tile(np.arange(len(rows)), math.ceil(cfg.epochs) + 1))
    bar = tqdm(total=total, initial=step, desc="train-ar", unit="step", disable=not progress)
    metrics = metrics_path.open("a")
    start = time.time()
    ar.train()
    while step < total:
        batch = order[step * cfg.batch_size : (step + 1) * cfg.batch_size].tolist()
        ids, mask = pad_right([rows[i] for i in batch], target.pad_id, target.device)
        loss = reconstruction_mse(ar(ids, mask), golds[batch].to(target.device)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        finite = bool(torch.isfinite(grad_norm))
        if finite:  # a non-finite gradient would poison the weights: skip the update, record it
            optimizer.step()
        scheduler.step()
        step += 1
        metrics.write(json.dumps({"step": step, "loss": loss.item(), "grad_norm": float(grad_norm),
                                  "skipped": not finite, "lr": scheduler.get_last_lr()[0],
                                  "seconds": round(time.time() - start, 2)}) + "\n")
        metrics.flush()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.checkpoint_every == 0 or step == total:
            save_training_state(state_dir, ar, optimizer, scheduler, step, {"settings": settings})
    bar.close()
    metrics.close()
    return _export(cfg, ar, target, model_spec, step)


def _resume(state_dir: Path, metrics_path: Path, settings: dict, ar, optimizer, scheduler) -> int:
    """Load the last complete state if there is one (same settings only); returns the step to start from."""
    found = latest_state(state_dir)
    if not found:
        return 0
    saved = load_training_state(found, ar, optimizer, scheduler)
    if saved.get("settings") != settings:
        raise NLAError(f"{state_dir.parent} holds a run with other settings; use the same settings to resume, "
                       "or pass --overwrite to start over")
    if metrics_path.exists():  # drop lines logged after that state, they will be logged again
        lines = [line for line in metrics_path.read_text().splitlines() if json.loads(line)["step"] <= saved["step"]]
        metrics_path.write_text("".join(f"{line}\n" for line in lines))
    return saved["step"]


def _export(cfg: ARTrainConfig, ar: Reconstructor, target, model_spec: str, step: int) -> dict:
    """Merge LoRA into the blocks and write OUT/ar/ in the released layout."""
    ar.eval()
    if cfg.lora_rank:
        from peft.tuners.lora import LoraLayer

        for module in ar.backbone.modules():
            if isinstance(module, LoraLayer):
                module.merge()
        ar.backbone = _strip_lora(ar.backbone)
    meta = ModelMeta(role="ar", d_model=ar.d_model, extraction_layer_index=ar.layer, injection_scale=None,
                     mse_scale=math.sqrt(ar.d_model), prompt_templates={"ar": AR_TEMPLATE},
                     base_checkpoint=model_spec, stage="sl", trained_on=[str(cfg.data)],
                     training={"lr": cfg.lr, "loss_type": "mse_2(1-cos)", "global_batch_size": cfg.batch_size,
                               "lora_rank": cfg.lora_rank, "steps": step})
    with atomic_path(cfg.out / "ar") as tmp:
        ar.save_released(tmp, target.tokenizer, meta)
        shutil.rmtree(cfg.out / "ar", ignore_errors=True)  # an older AR, replaced under --overwrite
    return {"steps": step, "out": str(cfg.out / "ar")}


def _strip_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Replace merged LoRA wrappers by their base layers, so the saved weights have plain names."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoraLayer):
                setattr(module, child_name, child.get_base_layer())
    return model
