"""Rewards: plain callables `(explanations, activations) -> list[float]`, shared by RL and evaluation.

The RL reward of one sample is

    reward = reconstruction reward          (-MSE, or -log MSE, of the AR's reading of the explanation)
             - length_penalty * tokens
    reward = failure_reward                 if the sample is untagged or truncated

The reference found the failure reward essential: without it explanations drift longer and
FVE collapses.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nla.autoencoder.reconstructor import reconstruction_mse
from nla.autoencoder.verbalizer import Explanation

RewardFn = Callable[[list[Explanation], torch.Tensor], list[float]]


class ReconstructionReward:
    """-MSE (sqrt(d)-normalised, = -2(1 - cos)) or -log MSE of the AR's reconstruction; NaN for failed samples."""

    def __init__(self, reconstruct: Callable[[list[str]], torch.Tensor], kind: str = "mse"):
        self.reconstruct = reconstruct  # texts -> (n, d) predicted activations
        self.kind = kind

    def __call__(self, explanations: list[Explanation], activations: torch.Tensor) -> list[float]:
        rewards = [math.nan] * len(explanations)
        present = [i for i, e in enumerate(explanations) if not e.failed]
        if present:
            predicted = self.reconstruct([explanations[i].text for i in present])
            mse = reconstruction_mse(predicted, activations[present].to(predicted.device))
            values = -mse if self.kind == "mse" else -torch.log(mse.clamp_min(1e-6))
            for i, value in zip(present, values.tolist()):
                rewards[i] = value
        return rewards


def shaped_rewards(explanations: list[Explanation], activations: torch.Tensor, reward: RewardFn, *,
                   failure_reward: float, length_penalty: float) -> list[float]:
    """The reward the policy is trained on: the base reward, minus the length penalty, failures overridden."""
    base = reward(explanations, activations)
    return [failure_reward if e.failed else r - length_penalty * e.num_tokens
            for e, r in zip(explanations, base)]
