"""The pure pieces of the GRPO objective, on tensors; no models, no I/O.

Shapes: rewards (N,) with N = activations x group_size, consecutive rows forming a group;
per-token tensors (N, R) over right-padded responses, with a (N, R) mask of real tokens.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - group mean) / (group std + 1e-6), population std; a group whose rewards are all equal gets 0."""
    groups = rewards.float().view(-1, group_size)  # (A, G)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True, unbiased=False)
    return ((groups - mean) / (std + 1e-6)).view(-1)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum()


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss -min(rho A, clip(rho) A) (N, R), and whether each token was clipped (N, R)."""
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv
    return -torch.minimum(unclipped, clipped), (clipped < unclipped)


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """log pi - log pi_ref per sampled token: unbiased for KL(pi || ref) but noisy, can be negative.

    As a loss its gradient on on-policy samples has zero mean; k3 is the default in the loss for that reason."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """(rho - 1) - log rho with rho = pi_ref / pi: unbiased for KL(pi || ref), always >= 0, low variance."""
    log_rho = ref_logprobs - logprobs
    return torch.expm1(log_rho) - log_rho


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    return kl_k1(logprobs, ref_logprobs) if estimator == "k1" else kl_k3(logprobs, ref_logprobs)


def old_logprobs_from_rollout(rollout_logprobs: torch.Tensor, train_logprobs: torch.Tensor,
                              tolerance: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """The importance-ratio denominator: the rollout's log-probs where they agree with the training pass.

    With one update per rollout the two should be equal; they differ by numerics (another kernel, bf16, a
    vLLM engine). A token whose rollout log-prob is off by more than `tolerance` takes the training value
    instead, so a backend's numeric drift never becomes a spurious ratio. Returns (old (N, R), agreed (N, R))."""
    train = train_logprobs.detach()
    agreed = (rollout_logprobs - train).abs() <= tolerance
    return torch.where(agreed, rollout_logprobs, train), agreed


def logprob_mismatch(rollout_logprobs: torch.Tensor, train_logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """Token-mean k3 between the rollout's and the training pass's log-probs (0 when they agree)."""
    k3 = kl_k3(train_logprobs.detach(), rollout_logprobs)
    return float(masked_sum(k3, mask) / mask.sum().clamp_min(1))
