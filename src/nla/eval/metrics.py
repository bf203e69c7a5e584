"""Fidelity of reconstructions: MSE, cosine, and FVE as the released NLAs report it.

    v_n = normalize(v, sqrt(d))                    every gold activation, scaled to norm sqrt(d)
    mu  = mean of v_n over the reference set       NOT renormalised (that inflates FVE)
    B   = mean over rows and dims of (v_n - mu)^2  the variance a constant guess leaves
    MSE = mean over rows of mean_d((p_n - v_n)^2)  with p_n = normalize(prediction, sqrt(d)); = 2(1 - cos)
    FVE = 1 - MSE / B

On low-variance layers cosine is ~0.99 for everything; FVE is the discriminating number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nla.autoencoder.reconstructor import normalize, reconstruction_mse
from nla.autoencoder.verbalizer import FAILED_MSE


@dataclass(frozen=True)
class Baseline:
    """The reference statistics FVE is measured against: the mean mu and the denominator B."""

    mean: torch.Tensor  # (d,)
    denominator: float


def baseline(golds: torch.Tensor) -> Baseline:
    gold_n = normalize(golds.float(), math.sqrt(golds.shape[-1]))
    mu = gold_n.mean(dim=0)
    return Baseline(mu, float((gold_n - mu).pow(2).mean()))


def fidelity(predictions: torch.Tensor, golds: torch.Tensor, reference: Baseline) -> dict:
    """MSE, cosine and FVE of predictions (N, d) against gold activations (N, d)."""
    mse = reconstruction_mse(predictions, golds)
    cos = torch.nn.functional.cosine_similarity(predictions.float(), golds.float(), dim=-1)
    return {"n": int(len(golds)), "mse": float(mse.mean()), "cosine": float(cos.mean()),
            "fve": 1.0 - float(mse.mean()) / reference.denominator, "baseline_denominator": reference.denominator}


def text_fidelity(reconstruct: Callable[[list[str]], torch.Tensor], texts: list[str], golds: torch.Tensor,
                  reference: Baseline, seed: int = 0) -> dict[str, dict]:
    """An AR's fidelity reading each row's own text ("real") and, as the control, another row's text
    ("shuffled": a seeded permutation of the texts); `reconstruct`: texts -> (n, d)."""
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    return {"real": fidelity(reconstruct(texts), golds, reference),
            "shuffled": fidelity(reconstruct([texts[i] for i in order]), golds, reference)}


def summary(mse, reference: Baseline) -> dict:
    """FVE, MSE and cosine of per-row errors; cos = 1 - mse/2 exactly under the 2(1 - cos) convention."""
    mean = float(mse.mean())
    return {"fve": 1.0 - mean / reference.denominator, "mse": mean, "cosine": 1.0 - mean / 2}


def texts_mse(reconstruct: Callable[[list[str]], torch.Tensor], texts: list[str | None],
              golds: torch.Tensor) -> np.ndarray:
    """Per-row MSE of an AR's reading of each text against its gold activation (`reconstruct`: texts -> (n, d));
    FAILED_MSE where there is no text (a failed explanation), the penalty RL gives it."""
    mse = np.full(len(texts), FAILED_MSE)
    present = [i for i, t in enumerate(texts) if t is not None]
    if present:
        mse[present] = reconstruction_mse(reconstruct([texts[i] for i in present]), golds[present]).numpy()
    return mse
