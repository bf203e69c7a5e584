"""`nla train-av`: supervised training of the verbalizer (AV) to write the explanation of an injected activation.

    nla train-av --data runs/acts/explanations-offline/av_sft.parquet --out runs/av
    nla train-av ... --shuffle-activations --out runs/av-control    # the control run

Each example is the canonical AV prompt with the activation (rescaled to the injection
scale) in place of the marker's embedding, followed by `<explanation>TEXT</explanation>`
and EOS. Cross-entropy on the response tokens only. The control run pairs every
explanation with another row's activation: if the AV reads the vector, the real run
ends at a lower loss than the control. LoRA (peft) on every linear layer by default;
the shared loop gives warmup + cosine, clipping and resumable state. The adapter is
written to OUT/av_adapter/ (with --export also merged into OUT/av/, a full HF model folder plus
nla_meta.yaml; `nla export` does that later); with --lora-rank 0, OUT/av/.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nla.autoencoder.checkpoint import verbalizer_tokens
from nla.autoencoder.injection import RESIDUAL, Injection
from nla.autoencoder.lora import adapter_rank, add_lora, load_adapter
from nla.autoencoder.meta import ModelMeta
from nla.autoencoder.shared import write_trained
from nla.autoencoder.soft_tokens import load_soft_tokens
from nla.autoencoder.verbalizer import Verbalizer
from nla.autoencoder.verbalizer_prompt import AV_TEMPLATE, choose_marker, injection_site, prompt_ids
from nla.data.norms import suggest_injection_scale
from nla.errors import NLAError
from nla.models import load_target
from nla.models.memory import check_batch_fits, logit_bytes, optimizer_bytes, stored_activation_bytes
from nla.train.config import AVTrainConfig
from nla.train.loop import process_device, start_processes, train_loop
from nla.train.pairs import BatchOrder, sft_inputs, warm_start

IGNORE = -100  # label value HF's loss skips


def response_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    ids = tokenizer(f"<explanation>{text}</explanation>", add_special_tokens=False)["input_ids"][:max_tokens]
    return ids + [tokenizer.eos_token_id]


def av_batch(verbalizer: Verbalizer, vectors: torch.Tensor, responses: list[list[int]], pad_id: int):
    """(inputs_embeds (B, P+R, d), attention_mask (B, P+R), labels (B, P+R)) with right-padded responses."""
    _, prompt_embeds, _ = verbalizer.prompt_embeddings(vectors)  # (B, P, d), the vector injected
    width = max(len(r) for r in responses)
    device = prompt_embeds.device
    ids = torch.full((len(responses), width), pad_id, dtype=torch.long, device=device)
    labels = torch.full((len(responses), width), IGNORE, dtype=torch.long, device=device)
    mask = torch.zeros((len(responses), width), dtype=torch.long, device=device)
    for row, r in enumerate(responses):
        ids[row, : len(r)] = torch.tensor(r, device=device)
        labels[row, : len(r)] = ids[row, : len(r)]
        mask[row, : len(r)] = 1
    embeds = torch.cat([prompt_embeds, verbalizer.model.get_input_embeddings()(ids)], dim=1)
    prompt_len = prompt_embeds.shape[1]
    full_mask = torch.cat([torch.ones((len(responses), prompt_len), dtype=torch.long, device=device), mask], dim=1)
    full_labels = torch.cat([torch.full((len(responses), prompt_len), IGNORE, device=device), labels], dim=1)
    return embeds, full_mask, full_labels


def response_logits(model, embeds: torch.Tensor, mask: torch.Tensor, width: int, shared: int = 0) -> torch.Tensor:
    """(B, R, V) logits that predict the R response tokens after the prompt: positions P-1 .. P+R-2.

    Only these are computed: the prompt's logits over the whole vocabulary are a tenth of a
    training step's work and memory, and nothing reads them (SFT's loss, RL's log-probs).
    `shared`: how many leading tokens are the same in every row (`Verbalizer.shared_prefix`, the
    prompt before the marker, about two thirds of it). They are run once for the whole batch, with
    gradients, and every row continues from their keys and values: the same logits for less work."""
    if shared and len(embeds) > 1:
        prefix = model(inputs_embeds=embeds[:1, :shared], use_cache=True, logits_to_keep=1).past_key_values
        prefix.batch_repeat_interleave(len(embeds))  # a differentiable copy per row
        return model(inputs_embeds=embeds[:, shared:], attention_mask=mask, past_key_values=prefix,
                     use_cache=True, logits_to_keep=width + 1).logits[:, :-1]
    return model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=width + 1).logits[:, :-1]


def response_loss(model, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                  prompt_length: int, shared: int = 0, tokens: float | None = None) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of an `av_batch` (what `labels=` would give);
    with `tokens`, the summed cross-entropy divided by that count instead."""
    width = labels.shape[1] - prompt_length
    logits = response_logits(model, embeds, mask, width, shared)
    targets = labels[:, prompt_length:].flatten()
    summed = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets, ignore_index=IGNORE,
                                               reduction="sum")
    return summed / (tokens if tokens is not None else (targets != IGNORE).sum())


def build_verbalizer(model_spec: str, injection_scale: float, lora_rank: int, device: str | torch.device,
                     injection: Injection = Injection(), dtype: str = "auto", init_adapter: Path | None = None):
    target = load_target(model_spec, device=str(device), dtype=dtype)
    model = target.model.requires_grad_(False)
    if init_adapter is not None:  # a warm start: the adapter's own weights, trainable
        model = load_adapter(model, init_adapter, adapter_name="av")
        for name, weight in model.named_parameters():
            weight.requires_grad_("lora_" in name)
    elif lora_rank:
        model = add_lora(model, lora_rank, adapter_name="av")  # named: it can share a base with the AR's
    else:
        model.requires_grad_(True)
    marker = choose_marker(target.tokenizer)
    ids = prompt_ids(target.tokenizer, AV_TEMPLATE, marker)
    av = Verbalizer(model, target.tokenizer, ids, injection_site(ids, marker), injection_scale, injection)
    if init_adapter is not None and injection.soft_tokens:  # the warm start's projector trains on as well
        load_soft_tokens(model, init_adapter, trainable=True)
    return av, target


def _check_save_rank(rank: int, adapter: Path) -> None:
    """A warm start trains at its adapter's rank: --save-rank must be below it (checked before any training)."""
    trained = adapter_rank(adapter)
    if rank >= trained:
        raise NLAError(f"save-rank {rank} is not below the rank of init-from's adapter ({trained}); pass "
                       f"1..{trained - 1}, or drop it")


def _injection(cfg: AVTrainConfig, layer: int, warm: ModelMeta | None) -> Injection:
    if warm is not None:  # the warm start's own site: its weights learnt to read the vector there
        return Injection.from_dict(warm.injection)
    into = cfg.injection_layer if cfg.injection_layer is not None else layer
    if cfg.injection == RESIDUAL and into > layer:
        raise NLAError(f"injection-layer {into} is after the extraction layer {layer}; the AV's blocks up to it "
                       f"would not see the vector as the target computed it; pass 0..{layer}")
    if cfg.injection != RESIDUAL:
        return Injection(cfg.injection)
    return Injection(cfg.injection, into, cfg.injection_early_layer, cfg.injection_soft_tokens)


def train_av(cfg: AVTrainConfig, *, progress: bool = True) -> dict:
    texts, golds, model_spec, layer = sft_inputs(cfg, "av")  # every check before any work
    init_adapter, warm = (warm_start(cfg.init_from, "av", model_spec, int(layer), AV_TEMPLATE) if cfg.init_from
                          else (None, None))
    if init_adapter is not None and cfg.save_rank is not None:
        _check_save_rank(cfg.save_rank, init_adapter)
    scale = (warm.injection_scale if warm else cfg.injection_scale) or suggest_injection_scale(
        float(golds.norm(dim=1).mean()))
    injection = _injection(cfg, int(layer), warm)
    accelerator = start_processes(cfg.device)
    torch.manual_seed(cfg.seed)
    av, target = build_verbalizer(model_spec, scale, cfg.lora_rank, process_device(accelerator, cfg.device),
                                  injection, cfg.dtype, init_adapter)
    target.resolve_layer(layer)  # the AV runs every block, so nothing else would notice a layer it lacks
    if golds.shape[1] != av.d_model:
        raise NLAError(f"{cfg.data} holds d={golds.shape[1]} activations but {model_spec} has d_model {av.d_model}; "
                       "pass data extracted from that model, or drop --model")
    if cfg.shuffle_activations:  # its own generator: the control must see the same batches as the real run
        golds = golds[torch.from_numpy(np.random.default_rng([cfg.seed, 1]).permutation(len(golds)))]
    responses = [response_ids(target.tokenizer, t, cfg.max_response_tokens) for t in texts]
    _check_memory(cfg, av, target, responses, accelerator.num_processes)  # before anything is written
    batches = BatchOrder(len(texts), cfg.batch_size, cfg.epochs, np.random.default_rng(cfg.seed))

    def loss_at(step: int, model, share) -> torch.Tensor:
        rows = batches.rows_at(step)
        batch = share(rows)  # this process's part of the batch
        embeds, mask, labels = av_batch(av, golds[batch], [responses[i] for i in batch], target.pad_id)
        # DDP averages the processes' gradients, so each divides its token sum by the whole batch's token
        # count over the process count: the average is then the token mean one process would take.
        tokens = sum(len(responses[i]) for i in rows) / accelerator.num_processes
        with av.reading():
            return response_loss(model, embeds, mask, labels, len(av.prompt), av.shared_prefix, tokens)

    settings = {**asdict(cfg), "model": model_spec, "rows": len(texts), "injection_scale": scale}
    settings.pop("overwrite")
    settings.pop("export")  # these two are what is written at the end, not how the AV trains
    settings.pop("save_rank")
    steps = train_loop(av.model, loss_at, accelerator=accelerator, total_steps=batches.total_steps, lr=cfg.lr,
                       warmup_fraction=cfg.warmup_fraction,
                       max_grad_norm=cfg.max_grad_norm, checkpoint_every=cfg.checkpoint_every, out=cfg.out,
                       settings=settings, overwrite=cfg.overwrite, stage="av", progress=progress)
    meta_out = ModelMeta(role="av", d_model=av.d_model, extraction_layer_index=int(layer), injection_scale=scale,
                         mse_scale=math.sqrt(av.d_model), tokens=verbalizer_tokens(av),
                         prompt_templates={"av": AV_TEMPLATE}, base_checkpoint=model_spec, stage="sl",
                         injection=injection.to_dict(),
                         trained_on=[str(cfg.data)], parent_checkpoints=[cfg.init_from] if cfg.init_from else [],
                         training={"lr": cfg.lr, "loss_type": "ce_response", "global_batch_size": cfg.batch_size,
                                   "lora_rank": warm.training.get("lora_rank") if warm else cfg.lora_rank,
                                   "steps": steps,
                                   "shuffled_activations": cfg.shuffle_activations})
    av.model.eval()
    lora = bool(cfg.lora_rank) or init_adapter is not None
    written = write_trained(cfg.out, "av", av.model, target.tokenizer, meta_out, lora=lora,
                            export=cfg.export, rank=cfg.save_rank) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return {"steps": steps, "out": str(written or cfg.out), "injection_scale": scale,
            "main_process": accelerator.is_main_process}


def _check_memory(cfg: AVTrainConfig, av: Verbalizer, target, responses: list[list[int]], processes: int) -> None:
    """Refuse a batch that clearly does not fit in memory (see models/memory.py): every block keeps its
    activations for the backward pass, and the loss holds fp32 logits over the vocabulary at the positions
    that predict a response token (response_logits computes no others)."""
    answer = max(len(r) for r in responses)
    longest = len(av.prompt) + answer
    per_row = (stored_activation_bytes(target.config, longest, target.num_layers, target.model.dtype.itemsize)
               + logit_bytes(target.config, answer + 1, backward=True))
    check_batch_fits(per_row, cfg.batch_size, optimizer_bytes(av.model.parameters()), target.device,
                     processes=processes, flag="--batch-size",
                     what=f"sequences of up to {longest} tokens, {answer} of them answer tokens with logits over "
                          f"{target.config.vocab_size}")
