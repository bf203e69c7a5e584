"""Model placement and dtype: one definition for the target, the AV and the AR (no GPU needed: the
accelerator count and the one from_pretrained call are replaced where the GPU path is checked)."""

import pytest
import torch

from nla.errors import NLAError
from nla.models import loading
from nla.models.loading import load_causal_lm, placement


def test_auto_spreads_over_several_gpus_only_when_asked(monkeypatch):
    assert placement("auto", spread=True) == (torch.device("cpu"), None)  # no GPU here
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert placement("auto", spread=True) == (None, "auto")
    assert placement("cpu", spread=True) == (torch.device("cpu"), None)


def test_a_spread_load_asks_accelerate_for_device_map_auto_in_bf16(monkeypatch, tiny_llama):
    from transformers import AutoModelForCausalLM

    seen = {}

    class Loaded(torch.nn.Module):
        pass

    def from_pretrained(source, **kwargs):
        seen.update(kwargs)
        return Loaded()

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    load_causal_lm(tiny_llama, device="auto", spread=True)
    assert seen["device_map"] == "auto" and seen["dtype"] == torch.bfloat16
    load_causal_lm(tiny_llama, device="cpu", dtype="bf16")
    assert seen["device_map"] is None and seen["dtype"] == torch.bfloat16


@pytest.mark.parametrize("dtype,expected", [("auto", torch.float32), ("bfloat16", torch.bfloat16),
                                            ("float16", torch.float16)])
def test_dtype_on_the_cpu(tiny_llama, dtype, expected):
    assert load_causal_lm(tiny_llama, device="cpu", dtype=dtype).dtype == expected


def test_unknown_dtype_is_named():
    with pytest.raises(NLAError, match="unknown dtype 'int3'"):
        loading.check_dtype_name("int3")
