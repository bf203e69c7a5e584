import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from nla.autoencoder.meta import ModelMeta
from nla.autoencoder.reconstructor import (
    VALUE_HEAD_FILE,
    Reconstructor,
    load_reconstructor,
    normalize,
    reconstruction_mse,
)
from nla.errors import NLAError
from nla.models.activations import pad_right

TEXTS = [[5, 9, 13, 40, 41, 42, 43], [7, 8, 9], [100, 101, 102, 103, 104]]


def ar_meta(layer, d=32):
    return ModelMeta(role="ar", d_model=d, extraction_layer_index=layer, injection_scale=None,
                     mse_scale=d ** 0.5, stage="init", prompt_templates={"ar": "Text: {explanation} Summary:"})


def test_mse_is_two_times_one_minus_cosine():
    torch.manual_seed(0)
    p, g = torch.randn(6, 32) * 7, torch.randn(6, 32) * 300
    cos = torch.nn.functional.cosine_similarity(p, g, dim=-1)
    torch.testing.assert_close(reconstruction_mse(p, g), 2 * (1 - cos), atol=1e-5, rtol=1e-5)
    assert reconstruction_mse(g, g * 3).max() < 1e-6 and normalize(g, None) is g


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_identity_head_predicts_the_layer_k_activation_at_the_last_real_token(tiny_models, family):
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family])
    ar = Reconstructor(model, layer=1)
    ids, mask = pad_right(TEXTS, 0, torch.device("cpu"))
    with torch.no_grad():
        pred = ar(ids, mask)
        for row, seq in enumerate(TEXTS):
            gold = model(torch.tensor([seq]), output_hidden_states=True).hidden_states[2][0, -1]
            torch.testing.assert_close(pred[row], gold, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_head_and_the_backbone(tiny_llama):
    ar = Reconstructor(AutoModelForCausalLM.from_pretrained(tiny_llama), layer=1)
    ids, mask = pad_right(TEXTS, 0, torch.device("cpu"))
    reconstruction_mse(ar(ids, mask), torch.randn(3, 32)).mean().backward()
    assert ar.head.weight.grad.abs().sum() > 0
    assert ar.backbone.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    assert ar.backbone.model.layers[3].mlp.up_proj.weight.grad is None  # never ran


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_released_layout_round_trip(tmp_path, tiny_models, family):
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family])
    ar = Reconstructor(model, layer=1)
    with torch.no_grad():
        ar.head.weight.add_(0.01 * torch.randn(32, 32))
    folder = tmp_path / "ar"
    ar.save_released(folder, AutoTokenizer.from_pretrained(tiny_models[family]), ar_meta(1))

    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    if family == "gemma3":
        assert len(config["layer_types"]) == 2
    weights = load_file(folder / "model.safetensors")
    assert not any(".layers.2." in k or ".layers.3." in k or k.startswith("lm_head") for k in weights)
    assert "model.norm.weight" not in weights and "model.embed_tokens.weight" in weights
    assert load_file(folder / VALUE_HEAD_FILE)["weight"].shape == (32, 32)

    loaded, tokenizer, meta = load_reconstructor(folder)
    assert meta.role == "ar" and loaded.layer == 1 and tokenizer.padding_side == "right"
    ids, mask = pad_right(TEXTS, 0, torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), ar(ids, mask), atol=1e-5, rtol=1e-5)


def test_wrong_head_shape_is_named(tmp_path, tiny_llama):
    ar = Reconstructor(AutoModelForCausalLM.from_pretrained(tiny_llama), layer=1)
    ar.save_released(tmp_path, AutoTokenizer.from_pretrained(tiny_llama), ar_meta(1, d=64))
    with pytest.raises(NLAError, match="shape \\(32, 32\\), but the sidecar says d_model 64"):
        load_reconstructor(tmp_path)
