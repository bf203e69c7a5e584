"""LoRA for the NLA stages (peft), injected in place so the model keeps its class and forward.

Adapters are named after their role ("av", "ar"), so one base model can carry both and
serve the target too (see autoencoder/shared.py). On disk an adapter folder is peft's
own format: adapter_config.json + adapter_model.safetensors.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from nla.errors import NLAError
from nla.inputs import damaged_file
from nla.layout import ADAPTER_WEIGHTS

LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(model: nn.Module, rank: int, layers: list[int] | None = None, adapter_name: str = "default") -> nn.Module:
    """LoRA adapters on the attention and MLP projections (of `layers` only, if given); the rest stays frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_MODULES, layers_to_transform=layers,
                        lora_dropout=0.0)
    return lora_weights_in_fp32(inject_adapter_in_model(config, model, adapter_name=adapter_name))


def lora_weights_in_fp32(model: nn.Module) -> nn.Module:
    """Keep LoRA weights in fp32 on a bf16/fp16 base: they are the trained (master) weights, and a bf16
    weight loses AdamW's small updates; the format stores adapters in fp32. peft casts each layer's input to
    its adapter's dtype and the sum back, as its own autocast_adapter_dtype does for get_peft_model."""
    import torch

    for name, weight in model.named_parameters():
        if "lora_" in name and weight.dtype in (torch.bfloat16, torch.float16):
            weight.data = weight.data.float()
    return model


def lora_layers(model: nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def save_adapter(model: nn.Module, folder: Path, adapter_name: str) -> None:
    """Write one named adapter in peft's format (its config and weights, nothing of the base)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.peft_config[adapter_name].save_pretrained(folder)
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, folder / ADAPTER_WEIGHTS)


def load_adapter(model: nn.Module, folder: Path, adapter_name: str) -> nn.Module:
    """Inject the adapter saved in `folder` under `adapter_name` and load its weights."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    with damaged_file(folder, "a LoRA adapter folder", "copy it again (adapter_config.json and "
                      f"{ADAPTER_WEIGHTS}), or rerun the command that wrote it"):
        config = LoraConfig.from_pretrained(folder)
        weights = load_file(folder / ADAPTER_WEIGHTS)
    model = lora_weights_in_fp32(inject_adapter_in_model(config, model, adapter_name=adapter_name))
    result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    if result.unexpected_keys:  # e.g. an adapter of another model copied into the run folder
        raise NLAError(f"the adapter in {folder} does not fit its base model (unexpected weights such as "
                       f"{result.unexpected_keys[0]}); the folder mixes files of different runs: retrain it")
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights and put the plain layers back, so saved names are the model's own."""
    from peft.tuners.lora import LoraLayer

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(module, name, child.get_base_layer())
    if hasattr(model, "peft_config"):  # no adapter is left: a later add_lora starts a model of its own
        del model.peft_config
    return model


def stacked_weights(first: dict, second: dict) -> dict | None:
    """One LoRA's weights equal to two applied together: delta = B1 A1 + B2 A2 = [B1 B2] [A1; A2].

    Exact when both adapters scale by the same alpha / r (add_lora's 2) on the same modules, as an
    RL adapter trained on top of an SFT adapter does; None when their modules differ."""
    import torch

    if set(first) != set(second) or any(not k.endswith((".lora_A.weight", ".lora_B.weight")) for k in first):
        return None
    return {k: torch.cat([first[k], second[k].to(first[k].dtype)], dim=0 if ".lora_A." in k else 1).contiguous()
            for k in first}


def stacked_adapter(model: nn.Module, adapter_name: str, parent: Path):
    """(config, weights) of one adapter of the summed rank equal to `parent`'s adapter plus the model's
    `adapter_name` LoRA, trained on top of it (with the parent merged into the base); None when they do not
    stack (other modules, another alpha / r)."""
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import load_file

    with damaged_file(parent, "a LoRA adapter folder"):
        config = LoraConfig.from_pretrained(parent)
        first = load_file(parent / ADAPTER_WEIGHTS)
    ours = model.peft_config[adapter_name]
    if config.lora_alpha * ours.r != ours.lora_alpha * config.r or config.rank_pattern or config.alpha_pattern:
        return None
    weights = stacked_weights(first, get_peft_model_state_dict(model, adapter_name=adapter_name))
    if weights is None:
        return None
    config.r, config.lora_alpha = config.r + ours.r, config.lora_alpha + ours.lora_alpha  # alpha / r unchanged
    return config, {k: v.detach().cpu() for k, v in weights.items()}
