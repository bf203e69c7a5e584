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
# Where a PeftModel keeps the model, so what PeftModel.save_pretrained writes before each weight's name: with it,
# peft's own PeftModel.from_pretrained(base, folder) reads our adapters. Older runs (and the first shipped
# default) wrote the bare names of an injected model; reading takes both.
PEFT_PREFIX = "base_model.model."


def weights_on_disk(state: dict) -> dict:
    return {PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()}


def weights_in_memory(weights: dict) -> dict:
    """The names of an adapter file as our injected model (no PeftModel around it) calls them."""
    return {k.removeprefix(PEFT_PREFIX): v for k, v in weights.items()}


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


def read_lora(folder: Path):
    """(config, weights named as our injected model names them) of an adapter folder in either key layout."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    return LoraConfig.from_pretrained(folder), weights_in_memory(load_file(folder / ADAPTER_WEIGHTS))


def adapter_rank(folder: Path) -> int:
    """The LoRA rank an adapter folder was saved at (a warm start keeps training at it)."""
    from peft import LoraConfig

    return LoraConfig.from_pretrained(folder).r


def write_lora(folder: Path, config, weights: dict) -> None:
    """An adapter folder in peft's format and key layout: its config and weights, nothing of the base."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    save_file(weights_on_disk(weights), folder / ADAPTER_WEIGHTS)


def save_adapter(model: nn.Module, folder: Path, adapter_name: str, rank: int | None = None) -> float | None:
    """Write one named adapter; with `rank`, at that lower rank (see reduced_rank), returning the share of the
    update kept."""
    from peft import get_peft_model_state_dict

    config = model.peft_config[adapter_name]
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    kept = None
    if rank is not None:
        config, state, kept = reduced_rank(config, state, rank)
    write_lora(folder, config, state)
    return kept


def reduced_rank(config, weights: dict, rank: int):
    """(config, weights, kept) of the rank-`rank` LoRA closest to the given one: each module's update B A cut to
    its `rank` largest singular directions (the best approximation of that rank, by Eckart-Young), at the same
    alpha / r so it still stacks with an RL adapter. `kept` is the share of the updates' squared norm (summed
    over modules) that the cut keeps. A larger rank trains better but ships bigger (issue 22's size budget)."""
    import copy

    import torch

    if config.rank_pattern or config.alpha_pattern or rank >= config.r:
        raise NLAError(f"cannot store this LoRA (rank {config.r}) at rank {rank}; pass a rank below {config.r}")
    reduced, total, kept = {}, 0.0, 0.0
    for key_a in (k for k in weights if k.endswith(".lora_A.weight")):
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        a, b = weights[key_a].double(), weights[key_b].double()
        # B A = Qb (Rb Ra^T) Qa^T: the SVD of the small r x r middle gives the update's own SVD
        q_b, r_b = torch.linalg.qr(b)
        q_a, r_a = torch.linalg.qr(a.T)
        u, s, vh = torch.linalg.svd(r_b @ r_a.T)
        root = s[:rank].sqrt()
        reduced[key_b] = ((q_b @ u[:, :rank]) * root).to(weights[key_b].dtype)
        reduced[key_a] = (root[:, None] * (vh[:rank] @ q_a.T)).to(weights[key_a].dtype)
        total, kept = total + float((s ** 2).sum()), kept + float((s[:rank] ** 2).sum())
    if set(reduced) != set(weights):
        raise NLAError("this adapter holds weights other than LoRA's A and B; it cannot be stored at a lower rank")
    config = copy.deepcopy(config)
    config.lora_alpha, config.r = config.lora_alpha * rank / config.r, rank
    if float(config.lora_alpha).is_integer():
        config.lora_alpha = int(config.lora_alpha)
    return config, reduced, (kept / total if total else 1.0)


def load_adapter(model: nn.Module, folder: Path, adapter_name: str) -> nn.Module:
    """Inject the adapter saved in `folder` under `adapter_name` and load its weights."""
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    with damaged_file(folder, "a LoRA adapter folder", "copy it again (adapter_config.json and "
                      f"{ADAPTER_WEIGHTS}), or rerun the command that wrote it"):
        config, weights = read_lora(folder)
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
    from peft import get_peft_model_state_dict

    with damaged_file(parent, "a LoRA adapter folder"):
        config, first = read_lora(parent)
    ours = model.peft_config[adapter_name]
    if config.lora_alpha * ours.r != ours.lora_alpha * config.r or config.rank_pattern or config.alpha_pattern:
        return None
    weights = stacked_weights(first, get_peft_model_state_dict(model, adapter_name=adapter_name))
    if weights is None:
        return None
    config.r, config.lora_alpha = config.r + ours.r, config.lora_alpha + ours.lora_alpha  # alpha / r unchanged
    return config, weights
