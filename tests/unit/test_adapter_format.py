"""Our adapter folders in peft's own format: peft's PeftModel.from_pretrained (the other side's reader) loads
them with every weight, and runs them as we do; the bare names older runs wrote still load."""

import warnings

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from nla.autoencoder.lora import PEFT_PREFIX, load_adapter, save_adapter


def test_peft_reads_our_adapter_with_every_weight_and_runs_it_as_ours(trained_lora, tiny_llama, tmp_path):
    from peft import PeftModel

    ours = trained_lora
    save_adapter(ours, tmp_path / "adapter", "av")
    with warnings.catch_warnings(record=True) as caught:  # peft only warns about weights it could not place
        warnings.simplefilter("always")
        theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "adapter")
    assert not [w for w in caught if "adapter keys" in str(w.message)]
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_llama)(ids).logits
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits)
        assert not torch.allclose(theirs(ids).logits, base)  # the adapter is applied, not ignored


def test_an_adapter_with_the_older_bare_names_still_loads(trained_lora, tiny_llama, tmp_path):
    ours = trained_lora
    save_adapter(ours, tmp_path / "adapter", "av")
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    weights = load_file(path)
    assert all(k.startswith(PEFT_PREFIX) for k in weights)
    save_file({k.removeprefix(PEFT_PREFIX): v for k, v in weights.items()}, path)  # as the first default shipped
    loaded = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "adapter", "av")
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, ours(ids).logits)
