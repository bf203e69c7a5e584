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
    ("residual*4", (Injection("residual", K, soft_tokens=4), 16, False)),
    ("residual*4:r64", (Injection("residual", K, soft_tokens=4), 64, False)),
    ("embedding", (Injection(), 16, False)),
])
def test_variant_names_set_the_site_the_rank_and_the_control(name, expected):
    assert injection_of(name) == expected


@pytest.mark.parametrize("name", ["middle", "embedding+6", "embedding@3", "embedding*4"])
def test_unknown_variants_are_refused_before_any_work(name):
    with pytest.raises(SystemExit, match="use embedding or residual"):
        readability.variant_settings(name, lora_rank=16)


def test_a_stored_rank_is_its_own_setting_and_the_name_of_the_training_it_cuts():
    settings = readability.variant_settings("residual:r64s28", lora_rank=16)
    assert (settings["lora_rank"], settings["save_rank"]) == (64, 28)
    assert readability.variant_settings("residual:r64", lora_rank=16)["save_rank"] is None
    assert AVTrainConfig(data="rows.parquet", out="out", **settings).save_rank == 28


def test_a_cut_variant_is_the_trained_adapter_stored_at_the_lower_rank(trained_lora, tmp_path):
    import json

    import torch
    from peft import LoraConfig
    from safetensors.torch import load_file

    from nla.autoencoder.lora import reduced_rank, save_adapter, weights_in_memory
    from nla.autoencoder.meta import ModelMeta, read_model_meta, write_model_meta

    trained = tmp_path / "residual:r8"
    save_adapter(trained_lora, trained / "av_adapter", "av")
    write_model_meta(trained / "av_adapter", ModelMeta(role="av", d_model=32, extraction_layer_index=1,
                                                       injection_scale=1.0, mse_scale=1.0, training={"lora_rank": 8}))
    (trained / "av_metrics.jsonl").write_text('{"loss": 1.0}\n')
    (trained / "train_seconds.json").write_text("12.5")
    readability.cut_variant(tmp_path / "residual:r8s3", trained, 3)
    cut = tmp_path / "residual:r8s3" / "av_adapter"
    _, expected, kept = reduced_rank(LoraConfig.from_pretrained(trained / "av_adapter"),
                                     weights_in_memory(load_file(trained / "av_adapter" / "adapter_model.safetensors")), 3)
    assert LoraConfig.from_pretrained(cut).r == 3
    assert all(torch.equal(v, expected[k]) for k, v in weights_in_memory(load_file(cut / "adapter_model.safetensors")).items())
    assert read_model_meta(cut).training == {"lora_rank": 8, "saved_rank": 3, "saved_rank_kept": round(kept, 4)}
    assert json.loads((tmp_path / "residual:r8s3" / "train_seconds.json").read_text()) == 12.5
