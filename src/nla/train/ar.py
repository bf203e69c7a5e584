"""`nla train-ar`: supervised training of the reconstructor (AR) on (explanation, activation) pairs.

    nla train-ar --data runs/acts/explanations-offline/ar_sft.parquet --out runs/ar

The AR is the target's blocks 0..K with LoRA adapters (peft; `--lora-rank 0` trains
the blocks fully) plus the identity-initialised head. Loss: 2(1 - cos) between the
prediction and the activation. AdamW, linear warmup then cosine decay to 10% of
the learning rate, gradient clipping. The training state is saved atomically every
N steps (OUT/ar_state/) and a rerun resumes from it; metrics go to OUT/ar_metrics.jsonl. At the end the
LoRA adapter is written to OUT/ar_adapter/ (with --export also merged into OUT/ar/, the released AR
layout; `nla export` does that later); with --lora-rank 0, OUT/ar/.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nla.autoencoder.lora import adapter_rank, add_lora, load_adapter
from nla.autoencoder.meta import ModelMeta
from nla.autoencoder.nla import ar_input_ids
from nla.autoencoder.reconstructor import Reconstructor, read_value_head, reconstruction_mse
from nla.autoencoder.shared import write_trained
from nla.autoencoder.templates import critic_suffix_ids
from nla.errors import NLAError
from nla.models import load_target
from nla.models.activations import pad_right
from nla.models.memory import check_batch_fits, optimizer_bytes, stored_activation_bytes
from nla.train.config import ARTrainConfig
from nla.train.loop import process_device, start_processes, train_loop
from nla.train.pairs import BatchOrder, sft_inputs, warm_start

AR_TEMPLATE = "A language model's thought, described in words:\n{explanation}\nThe thought described above is"


def build_reconstructor(model_spec: str, layer: int | None, lora_rank: int, device: str | torch.device,
                        dtype: str = "auto", init_adapter: Path | None = None):
    target = load_target(model_spec, device=str(device), dtype=dtype)
    layer = target.resolve_layer(layer)
    backbone = target.model.requires_grad_(False)
    if init_adapter is not None:  # a warm start: the adapter's own weights and head, trainable
        backbone = load_adapter(backbone, init_adapter, adapter_name="ar")
        for name, weight in backbone.named_parameters():
            weight.requires_grad_("lora_" in name)
        return Reconstructor(backbone, layer, read_value_head(init_adapter, target.d_model)), target
    if lora_rank:
        # Only the blocks the AR runs; named "ar" so it can sit on one base beside the AV's adapter.
        backbone = add_lora(backbone, lora_rank, layers=list(range(layer + 1)), adapter_name="ar")
    else:
        for block in target.layers[: layer + 1]:
            block.requires_grad_(True)
    return Reconstructor(backbone, layer), target


def train_ar(cfg: ARTrainConfig, *, progress: bool = True) -> dict:
    texts, golds, model_spec, layer = sft_inputs(cfg, "ar", cfg.text_column)  # every check before any work
    init_adapter, _ = (warm_start(cfg.init_from, "ar", model_spec, int(layer), AR_TEMPLATE) if cfg.init_from
                       else (None, None))
    accelerator = start_processes(cfg.device)
    torch.manual_seed(cfg.seed)
    ar, target = build_reconstructor(model_spec, layer, cfg.lora_rank, process_device(accelerator, cfg.device),
                                     cfg.dtype, init_adapter)
    if golds.shape[1] != ar.d_model:
        raise NLAError(f"{cfg.data} holds d={golds.shape[1]} activations but {model_spec} has d_model {ar.d_model}; "
                       "pass data extracted from that model, or drop --model")
    rows = ar_input_ids(target.tokenizer, texts, AR_TEMPLATE, target.adapter.requires_bos)
    _check_memory(cfg, ar, target, rows, accelerator.num_processes)  # before anything is written
    batches = BatchOrder(len(rows), cfg.batch_size, cfg.epochs, np.random.default_rng(cfg.seed))

    def loss_at(step: int, model, share) -> torch.Tensor:
        batch = share(batches.rows_at(step))
        ids, mask = pad_right([rows[i] for i in batch], target.pad_id, target.device)
        return reconstruction_mse(model(ids, mask), golds[batch].to(target.device)).mean()

    settings = {**asdict(cfg), "model": model_spec, "rows": len(rows)}
    settings.pop("overwrite")
    settings.pop("export")  # what is written at the end, not how the AR trains
    steps = train_loop(ar, loss_at, accelerator=accelerator, total_steps=batches.total_steps, lr=cfg.lr,
                       warmup_fraction=cfg.warmup_fraction,
                       max_grad_norm=cfg.max_grad_norm, checkpoint_every=cfg.checkpoint_every, out=cfg.out,
                       settings=settings, overwrite=cfg.overwrite, stage="ar", progress=progress)
    rank = adapter_rank(init_adapter) if init_adapter is not None else cfg.lora_rank  # a warm start keeps its own
    written = _export(cfg, ar, target, model_spec, steps, rank) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return {"steps": steps, "out": str(written or cfg.out), "main_process": accelerator.is_main_process}


def _check_memory(cfg: ARTrainConfig, ar: Reconstructor, target, rows: list[list[int]], processes: int) -> None:
    """Refuse a batch that clearly does not fit in memory (see models/memory.py): blocks 0..K keep their
    activations for the backward pass; the AR has no logits."""
    longest = max(len(r) for r in rows)
    per_row = stored_activation_bytes(target.config, longest, ar.layer + 1, target.model.dtype.itemsize)
    check_batch_fits(per_row, cfg.batch_size, optimizer_bytes(ar.parameters()), target.device, processes=processes,
                     flag="--batch-size", what=f"blocks 0..{ar.layer} on texts of up to {longest} tokens")


def _export(cfg: ARTrainConfig, ar: Reconstructor, target, model_spec: str, step: int, rank: int):
    """OUT/ar_adapter/ (LoRA; with --export also OUT/ar/) or OUT/ar/ (full fine-tuning); returns the folder."""
    ar.eval()
    meta = ModelMeta(role="ar", d_model=ar.d_model, extraction_layer_index=ar.layer, injection_scale=None,
                     mse_scale=math.sqrt(ar.d_model), prompt_templates={"ar": AR_TEMPLATE},
                     tokens={"critic_suffix_ids": critic_suffix_ids(target.tokenizer, AR_TEMPLATE)},
                     base_checkpoint=model_spec, stage="sl", trained_on=[str(cfg.data)],
                     parent_checkpoints=[cfg.init_from] if cfg.init_from else [],
                     training={"lr": cfg.lr, "loss_type": "mse_2(1-cos)", "global_batch_size": cfg.batch_size,
                               "lora_rank": rank, "steps": step, "text_column": cfg.text_column})
    return write_trained(cfg.out, "ar", ar.backbone, target.tokenizer, meta, lora=bool(rank), head=ar.head,
                         export=cfg.export)
