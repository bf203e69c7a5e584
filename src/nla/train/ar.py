"""`nla train-ar`: supervised training of the reconstructor (AR) on (explanation, activation) pairs.

    nla train-ar --data runs/acts/explanations-offline/ar_sft.parquet --out runs/ar

The AR is the target's blocks 0..K with LoRA adapters (peft; `--lora-rank 0` trains
the blocks fully) plus the identity-initialised head. Loss: 2(1 - cos) between the
prediction and the activation. AdamW, linear warmup then cosine decay to 10% of
the learning rate, gradient clipping. The training state is saved atomically every
N steps (OUT/ar_state/) and a rerun resumes from it; metrics go to OUT/ar_metrics.jsonl. At the end the
LoRA adapter is kept in OUT/ar_adapter/ and merged into OUT/ar/, the released AR layout.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch

from nla.autoencoder.meta import ModelMeta
from nla.autoencoder.nla import ar_input_ids
from nla.autoencoder.reconstructor import Reconstructor, reconstruction_mse
from nla.autoencoder.shared import write_trained
from nla.autoencoder.templates import critic_suffix_ids
from nla.errors import NLAError
from nla.models import load_target
from nla.models.activations import pad_right
from nla.train.config import ARTrainConfig
from nla.train.loop import process_device, start_processes, train_loop
from nla.train.lora import add_lora
from nla.train.pairs import BatchOrder, read_pairs

AR_TEMPLATE = "A language model's thought, described in words:\n{explanation}\nThe thought described above is"


def build_reconstructor(model_spec: str, layer: int | None, lora_rank: int, device: str | torch.device,
                        dtype: str = "auto"):
    target = load_target(model_spec, device=str(device), dtype=dtype)
    layer = target.resolve_layer(layer)
    backbone = target.model.requires_grad_(False)
    if lora_rank:
        # Only the blocks the AR runs; named "ar" so it can sit on one base beside the AV's adapter.
        backbone = add_lora(backbone, lora_rank, layers=list(range(layer + 1)), adapter_name="ar")
    else:
        for block in target.layers[: layer + 1]:
            block.requires_grad_(True)
    return Reconstructor(backbone, layer), target


def train_ar(cfg: ARTrainConfig, *, progress: bool = True) -> dict:
    texts, golds, meta = read_pairs(cfg.data, cfg.text_column)
    extraction = meta.get("extraction") or {}
    model_spec = cfg.model or extraction.get("base_model")
    if not model_spec:
        raise NLAError(f"{cfg.data} does not name its model; pass --model")
    if (cfg.out / "ar" / "nla_meta.yaml").exists() and not cfg.overwrite:
        raise NLAError(f"{cfg.out} already holds a trained AR; pass --overwrite or another --out")
    accelerator = start_processes(cfg.device)
    torch.manual_seed(cfg.seed)
    ar, target = build_reconstructor(model_spec, cfg.layer if cfg.layer is not None else extraction.get("layer_index"),
                                     cfg.lora_rank, process_device(accelerator, cfg.device), cfg.dtype)
    if golds.shape[1] != ar.d_model:
        raise NLAError(f"{cfg.data} holds d={golds.shape[1]} activations but {model_spec} has d_model {ar.d_model}")
    rows = ar_input_ids(target.tokenizer, texts, AR_TEMPLATE, target.adapter.requires_bos)
    batches = BatchOrder(len(rows), cfg.batch_size, cfg.epochs, np.random.default_rng(cfg.seed))

    def loss_at(step: int, model, share) -> torch.Tensor:
        batch = share(batches.rows_at(step))
        ids, mask = pad_right([rows[i] for i in batch], target.pad_id, target.device)
        return reconstruction_mse(model(ids, mask), golds[batch].to(target.device)).mean()

    settings = {**asdict(cfg), "model": model_spec, "rows": len(rows)}
    settings.pop("overwrite")
    steps = train_loop(ar, loss_at, accelerator=accelerator, total_steps=batches.total_steps, lr=cfg.lr,
                       warmup_fraction=cfg.warmup_fraction,
                       max_grad_norm=cfg.max_grad_norm, checkpoint_every=cfg.checkpoint_every, out=cfg.out,
                       settings=settings, overwrite=cfg.overwrite, stage="ar", progress=progress)
    if accelerator.is_main_process:
        _export(cfg, ar, target, model_spec, steps)
    accelerator.wait_for_everyone()
    return {"steps": steps, "out": str(cfg.out / "ar"), "main_process": accelerator.is_main_process}


def _export(cfg: ARTrainConfig, ar: Reconstructor, target, model_spec: str, step: int) -> None:
    """OUT/ar_adapter/ (LoRA) and OUT/ar/ in the released layout."""
    ar.eval()
    meta = ModelMeta(role="ar", d_model=ar.d_model, extraction_layer_index=ar.layer, injection_scale=None,
                     mse_scale=math.sqrt(ar.d_model), prompt_templates={"ar": AR_TEMPLATE},
                     tokens={"critic_suffix_ids": critic_suffix_ids(target.tokenizer, AR_TEMPLATE)},
                     base_checkpoint=model_spec, stage="sl", trained_on=[str(cfg.data)],
                     training={"lr": cfg.lr, "loss_type": "mse_2(1-cos)", "global_batch_size": cfg.batch_size,
                               "lora_rank": cfg.lora_rank, "steps": step, "text_column": cfg.text_column})
    write_trained(cfg.out, "ar", ar.backbone, target.tokenizer, meta, lora=bool(cfg.lora_rank), head=ar.head)
