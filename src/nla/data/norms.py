"""Activation-norm statistics and the injection scale they suggest."""

from __future__ import annotations

import math

import numpy as np


def norm_stats(norms: np.ndarray) -> dict:
    """Mean and percentiles of activation norms (the figure that sets the injection scale)."""
    norms = np.asarray(norms, dtype=np.float64)
    p50, p90, p99 = np.percentile(norms, [50, 90, 99])
    return {"count": int(norms.size), "mean": float(norms.mean()), "std": float(norms.std()), "min": float(norms.min()),
            "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(norms.max())}


def suggest_injection_scale(mean_norm: float) -> float:
    """A round number at or a little above the mean norm (released NLAs: Qwen 150, Llama 30)."""
    if not math.isfinite(mean_norm) or mean_norm <= 0:
        raise ValueError(f"mean norm must be positive and finite, got {mean_norm}")
    magnitude = 10 ** math.floor(math.log10(mean_norm))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= mean_norm:
            return float(step * magnitude)
    return float(10 * magnitude)
