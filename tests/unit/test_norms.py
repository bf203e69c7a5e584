import numpy as np
import pytest

from nla.data.norms import norm_stats, suggest_injection_scale


@pytest.mark.parametrize("mean,scale", [(235.0, 250.0), (139.0, 150.0), (507.0, 600.0), (30.0, 30.0),
                                        (0.9, 1.0), (71000.0, 80000.0)])
def test_injection_scale_is_a_round_number_at_or_above_the_mean(mean, scale):
    assert suggest_injection_scale(mean) == scale


def test_injection_scale_rejects_nonsense():
    with pytest.raises(ValueError):
        suggest_injection_scale(float("nan"))


def test_norm_stats_percentiles():
    stats = norm_stats(np.arange(1, 101, dtype=float))
    assert stats["count"] == 100 and stats["mean"] == 50.5 and stats["max"] == 100
    assert stats["p50"] == pytest.approx(50.5) and stats["p99"] == pytest.approx(99.01)
