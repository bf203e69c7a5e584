"""The RL policy: the trainable AV (SFT AV plus a fresh LoRA), its KL reference and log-probs of responses.

The reference is the SFT AV itself: with LoRA, the same model with its adapters switched off
(no second copy); with full fine-tuning, a frozen copy.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from nla.autoencoder.lora import add_lora
from nla.autoencoder.verbalizer import Verbalizer
from nla.errors import NLAError
from nla.models.activations import pad_right
from nla.rl.config import RLConfig
from nla.rl.rollout import Rollout
from nla.train.av import response_logits


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module):
    """The SFT AV: the policy with its LoRA adapters switched off (grads of the adapters restored after)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


class Policy:
    """The trainable AV, its KL reference and its optimizer (the model may be wrapped for DDP)."""

    def __init__(self, verbalizer: Verbalizer, cfg: RLConfig):
        model = verbalizer.model.requires_grad_(False)
        if cfg.lora_rank:
            model = add_lora(model, cfg.lora_rank)
            self.reference = None  # the same model, adapters off
        else:
            # Full fine-tuning has no adapters to switch off, so the reference is a frozen copy.
            if verbalizer.injection.site != "embedding" and cfg.kl_coef > 0:
                raise NLAError("full fine-tuning (--lora-rank 0) with a KL reference supports the embedding "
                               "injection only; use LoRA (--lora-rank 16) for a residual-injection AV")
            self.reference = copy.deepcopy(model).eval() if cfg.kl_coef > 0 else None
            model.requires_grad_(True)
        verbalizer.model = model
        self.verbalizer, self.cfg = verbalizer, cfg
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.av_lr, weight_decay=0.0)
        self.scheduler = warmup_schedule(self.optimizer, cfg.warmup_steps)
        self.wrapped = model

    @torch.no_grad()
    def reference_logprobs(self, embeds, mask, ids) -> torch.Tensor:
        shared = self.verbalizer.shared_prefix
        if self.reference is not None:
            return response_logprobs(self.reference, embeds, mask, ids, self.cfg.temperature, shared)
        with adapters_disabled(self.verbalizer.model) as model:
            return response_logprobs(model, embeds, mask, ids, self.cfg.temperature, shared)


def warmup_schedule(optimizer, warmup_steps: int):
    """Linear warmup, then a constant rate (RL has no natural end to decay towards)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


def response_logprobs(model, embeds: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor,
                      temperature: float, shared: int = 0) -> torch.Tensor:
    """(N, R) log-probs of the response tokens `ids` after the prompt, at the sampling temperature
    (`shared`: the leading prompt tokens every row has in common, run once; see `response_logits`)."""
    logits = response_logits(model, embeds, mask, ids.shape[1], shared)
    return torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, ids[..., None]).squeeze(-1)


def padded_responses(rollout: Rollout, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = pad_right(rollout.token_ids, pad_id, device)  # (N, R) each
    return ids, mask.float()
