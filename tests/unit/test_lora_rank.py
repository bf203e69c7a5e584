"""A LoRA stored at a lower rank (--save-rank), checked against numpy's SVD of each module's update: the stored
weights, and the loaded model against the base's weights with numpy's cut update added."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from nla.autoencoder.lora import load_adapter, reduced_rank, save_adapter
from nla.errors import NLAError
from nla.train.config import AVTrainConfig


def updates(weights: dict, scale: float) -> dict:
    """Each module's update scale * B A, as numpy arrays."""
    return {k[: -len(".lora_A.weight")]: scale * (weights[k.replace(".lora_A.", ".lora_B.")] @ weights[k]).numpy()
            for k in weights if k.endswith(".lora_A.weight")}


def test_each_update_becomes_its_best_approximation_of_the_lower_rank(trained_lora):
    from peft import get_peft_model_state_dict

    config = trained_lora.peft_config["av"]
    weights = {k: v.detach().double() for k, v in get_peft_model_state_dict(trained_lora, adapter_name="av").items()}
    small, reduced, kept = reduced_rank(config, weights, 3)
    assert (small.r, small.lora_alpha / small.r) == (3, config.lora_alpha / config.r)  # alpha / r unchanged
    assert config.r == 8  # the trained adapter's config is left alone
    before, after = updates(weights, config.lora_alpha / config.r), updates(reduced, small.lora_alpha / small.r)
    assert all(reduced[k].shape[0 if ".lora_A." in k else 1] == 3 for k in reduced)
    total = kept_norm = 0.0
    for module, delta in before.items():
        u, s, vh = np.linalg.svd(delta)
        np.testing.assert_allclose(after[module], (u[:, :3] * s[:3]) @ vh[:3], atol=1e-9)
        total, kept_norm = total + (s ** 2).sum(), kept_norm + (s[:3] ** 2).sum()
    assert kept == pytest.approx(kept_norm / total) and 0 < kept < 1


def test_a_stored_lower_rank_adapter_loads_and_runs_as_the_cut_update(trained_lora, tiny_llama, tmp_path):
    from peft import get_peft_model_state_dict

    full = {k: v.detach().double() for k, v in get_peft_model_state_dict(trained_lora, adapter_name="av").items()}
    kept = save_adapter(trained_lora, tmp_path / "cut", "av", rank=5)
    assert 0.4 < kept < 1 and save_adapter(trained_lora, tmp_path / "full", "av") is None
    loaded = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "cut", "av")
    assert loaded.peft_config["av"].r == 5
    # the independent reading: the base's own weights plus numpy's rank-5 cut of each full update
    expected = AutoModelForCausalLM.from_pretrained(tiny_llama)
    params = dict(expected.named_parameters())
    for module, delta in updates(full, trained_lora.peft_config["av"].lora_alpha / 8).items():
        u, s, vh = np.linalg.svd(delta)
        params[f"{module}.weight"].data += torch.from_numpy((u[:, :5] * s[:5]) @ vh[:5]).float()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected(ids).logits, atol=1e-4, rtol=1e-4)


def test_a_rank_that_is_not_lower_is_refused_in_one_line(trained_lora, tmp_path):
    with pytest.raises(NLAError, match=r"^cannot store this LoRA \(rank 8\) at rank 8; pass a rank below 8$"):
        save_adapter(trained_lora, tmp_path / "same", "av", rank=8)
    assert not (tmp_path / "same" / "adapter_model.safetensors").exists()
    with pytest.raises(NLAError, match=r"^save-rank 16 must be below the LoRA rank \(16\)"):
        AVTrainConfig(data=tmp_path / "d.parquet", out=tmp_path / "run", save_rank=16)
    with pytest.raises(NLAError, match=r"^save-rank applies to LoRA only \(lora-rank 0 trains every weight\)"):
        AVTrainConfig(data=tmp_path / "d.parquet", out=tmp_path / "run", lora_rank=0, save_rank=4)
