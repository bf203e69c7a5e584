import math

import pytest
import torch

from nla.errors import NLAError
from nla.models import load_target
from nla.models.adapters import adapter_for


@pytest.mark.parametrize("family,adapter", [("llama", "llama"), ("qwen2", "llama"), ("gemma3", "gemma")])
def test_tiny_models_load_with_their_family_adapter(tiny_models, family, adapter):
    target = load_target(str(tiny_models[family]))
    assert target.adapter.family == adapter
    assert (target.num_layers, target.d_model, target.default_layer) == (4, 32, 2)
    assert target.model.dtype == torch.float32 and target.device.type == "cpu"
    assert not any(p.requires_grad for p in target.model.parameters())


def test_gemma_embeddings_are_scaled_by_sqrt_d(tiny_models):
    target = load_target(str(tiny_models["gemma3"]))
    scale = target.adapter.embed_scale(target.model.config)
    assert scale == pytest.approx(math.sqrt(32))
    ids = torch.tensor([[5, 6, 7]])
    looked_up = target.model.get_input_embeddings()(ids)
    raw = target.model.get_input_embeddings().weight[ids]
    torch.testing.assert_close(looked_up, raw * scale)


def test_llama_embeddings_are_not_scaled(tiny_llama):
    target = load_target(str(tiny_llama))
    assert target.adapter.embed_scale(target.model.config) == 1.0


def test_gemma_gets_bos_prepended_once_llama_does_not(tiny_models):
    gemma = load_target(str(tiny_models["gemma3"]))
    ids = gemma.encode("hello world")
    assert ids[0] == gemma.tokenizer.bos_token_id and ids[1] != gemma.tokenizer.bos_token_id
    llama = load_target(str(tiny_models["llama"]))
    assert llama.tokenizer.bos_token_id not in llama.encode("hello world")


def test_chat_rendering_uses_the_template_or_a_plain_fallback(tiny_models):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    llama = load_target(str(tiny_models["llama"]))
    assert llama.render_chat(messages).startswith("<|im_start|>user\nhi<|im_end|>")
    gemma = load_target(str(tiny_models["gemma3"]))
    assert gemma.render_chat(messages) == "User: hi\n\nAssistant: hello\n"
    # Ending where the assistant's next turn begins, so the target can write it (nla trace --continue)
    assert llama.render_chat(messages[:1], add_generation_prompt=True).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert gemma.render_chat(messages[:1], add_generation_prompt=True) == "User: hi\n\nAssistant:"


def test_layer_resolution(tiny_llama):
    target = load_target(str(tiny_llama))
    assert target.resolve_layer(None) == 2 and target.resolve_layer(3) == 3
    with pytest.raises(NLAError, match="layer 4 is out of range.*between 0 and 3"):
        target.resolve_layer(4)
    with pytest.raises(NLAError, match="out of range"):
        target.resolve_layer(-1)


@pytest.mark.parametrize("spec,message", [
    ("no-such-preset", "unknown model 'no-such-preset'"),
    ("missing.gguf", "GGUF file missing.gguf not found"),
])
def test_bad_model_specs_name_the_problem(spec, message):
    with pytest.raises(NLAError, match=message):
        load_target(spec)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(NLAError, match="has no config.json"):
        load_target(str(tmp_path))


def test_unknown_family_is_rejected_with_the_fix():
    class FakeConfig:
        model_type = "mamba"

        def get_text_config(self):
            return self

    with pytest.raises(NLAError, match="model type 'mamba' has no nla adapter.*adapters.py"):
        adapter_for(FakeConfig())


def test_byte_pieces_show_the_bytes_they_encode():
    """A piece of a multi-byte character decodes to U+FFFD alone; the trace shows its bytes instead."""
    from nla.models.target import BYTE_LEVEL, token_bytes

    assert len(BYTE_LEVEL) == 256 and sorted(BYTE_LEVEL.values()) == list(range(256))
    assert token_bytes("ĠðŁĺ") == " 😀".encode()[:4]  # byte-level BPE: a space and 3 of the emoji's 4 bytes
    assert token_bytes("<0xF0>") == b"\xf0"  # SentencePiece byte fallback
    assert token_bytes("▁hello") is None and token_bytes("") is None
