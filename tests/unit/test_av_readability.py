"""benchmarks/av_readability.py: a variant's name says how its AV reads the vector, and nothing else changes."""

import pytest

from conftest import load_benchmark
from nla.autoencoder.injection import Injection
from nla.train.av import _injection
from nla.train.config import AVTrainConfig

readability = load_benchmark("av_readability")
K = 20


def injection_of(name: str) -> tuple[Injection, int, bool]:
    settings = readability.variant_settings(name, lora_rank=16)
    cfg = AVTrainConfig(data="rows.parquet", out="out", **settings)
    return _injection(cfg, K, None), cfg.lora_rank, cfg.shuffle_activations


@pytest.mark.parametrize("name,expected", [
    ("residual", (Injection("residual", K), 16, False)),
    ("residual+6", (Injection("residual", K, early_layer=6), 16, False)),
    ("residual@6", (Injection("residual", 6), 16, False)),
    ("residual:r64", (Injection("residual", K), 64, False)),
    ("residual+6:r64-shuffled", (Injection("residual", K, early_layer=6), 64, True)),
    ("embedding", (Injection(), 16, False)),
])
def test_variant_names_set_the_site_the_rank_and_the_control(name, expected):
    assert injection_of(name) == expected


@pytest.mark.parametrize("name", ["middle", "embedding+6", "embedding@3"])
def test_unknown_variants_are_refused_before_any_work(name):
    with pytest.raises(SystemExit, match="use embedding or residual"):
        readability.variant_settings(name, lora_rank=16)
