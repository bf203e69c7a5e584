"""LoRA for the SFT stages (peft), injected in place so the model keeps its class and forward."""

from __future__ import annotations

from torch import nn

LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(model: nn.Module, rank: int, layers: list[int] | None = None) -> nn.Module:
    """LoRA adapters on the attention and MLP projections (of `layers` only, if given); the rest stays frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_MODULES, layers_to_transform=layers,
                        lora_dropout=0.0)
    return inject_adapter_in_model(config, model)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights and put the plain layers back, so saved names are the model's own."""
    from peft.tuners.lora import LoraLayer

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(module, name, child.get_base_layer())
    return model
