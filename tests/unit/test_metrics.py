import math

import pytest
import torch

from nla.eval.metrics import baseline, fidelity, text_fidelity


def clustered(n=400, d=64, seed=0):
    """Activations like a real layer's: a shared direction plus per-row variation, varied norms."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(d, generator=g) * 3
    return (common + torch.randn(n, d, generator=g)) * torch.rand(n, 1, generator=g).add(0.5) * 100


def test_perfect_reconstruction_scores_one_whatever_the_scale():
    golds = clustered()
    result = fidelity(golds * 0.01, golds, baseline(golds))
    assert math.isclose(result["fve"], 1.0, abs_tol=1e-6) and math.isclose(result["cosine"], 1.0, abs_tol=1e-6)


def test_denominator_uses_the_mean_without_renormalising_it():
    golds = clustered()
    ref = baseline(golds)
    gold_n = golds / golds.norm(dim=1, keepdim=True) * math.sqrt(64)
    assert math.isclose(ref.denominator, float((gold_n - gold_n.mean(0)).pow(2).mean()), rel_tol=1e-5)
    renormalised = gold_n.mean(0) / gold_n.mean(0).norm() * math.sqrt(64)
    assert ref.denominator < float((gold_n - renormalised).pow(2).mean())  # renormalising would inflate FVE


def test_constant_and_shuffled_guesses_are_controls_that_score_low():
    golds = clustered()
    ref = baseline(golds)
    mean_guess = fidelity(ref.mean.expand_as(golds), golds, ref)
    shuffled = fidelity(golds[torch.randperm(len(golds), generator=torch.Generator().manual_seed(1))], golds, ref)
    noisy_truth = fidelity(golds + 20 * torch.randn_like(golds), golds, ref)
    assert mean_guess["cosine"] > 0.8  # a constant guess already looks good by cosine ...
    assert abs(mean_guess["fve"]) < 0.1  # ... and explains nothing by FVE
    assert shuffled["fve"] < 0 < noisy_truth["fve"] < 1


def test_text_fidelity_reads_each_rows_own_text_and_another_rows_as_the_control():
    golds = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    by_text = {f"row {i}": golds[i] for i in range(16)}  # a perfect AR: each text gives its own row's vector
    read = text_fidelity(lambda texts: torch.stack([by_text[t] for t in texts]), list(by_text), golds, baseline(golds))
    assert read["real"]["fve"] == pytest.approx(1.0, abs=1e-5)
    assert read["shuffled"]["fve"] < 0.5
