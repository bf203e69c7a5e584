"""What reading with an NLA holds in memory, from parameter counts (models built on the meta device: no weights).

    nla_memory(config, layer=20)   # bytes of the AV, the AR, the target and their sum

Reading a text holds three models: the AV (the full causal LM), the AR (embeddings and blocks 0..K,
no final norm, no lm_head, plus the d x d value head, which nla keeps in fp32) and the target (the
full causal LM). Gemma 3 12B/27B count their text decoder only: nla never loads their vision tower.
Activations and the KV cache of a few hundred tokens add little on top at these batch sizes.

RELEASED lists the published NLAs with their targets' decoder shapes (the public config.json values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Released:
    prefix: str  # hub prefix: PREFIX-av and PREFIX-ar
    target: str  # the hub id of the target (the sidecar's base_checkpoint names it)
    layer: int  # K
    family: str  # qwen2, gemma3_text or llama
    shape: dict  # the decoder's config values


RELEASED = [
    Released("kitft/nla-qwen2.5-7b-L20", "Qwen/Qwen2.5-7B-Instruct", 20, "qwen2", dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, tie_word_embeddings=False)),
    Released("kitft/nla-gemma3-12b-L32", "google/gemma-3-12b-it", 32, "gemma3_text", dict(
        vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
        num_key_value_heads=8, head_dim=256)),
    Released("kitft/nla-gemma3-27b-L41", "google/gemma-3-27b-it", 41, "gemma3_text", dict(
        vocab_size=262208, hidden_size=5376, intermediate_size=21504, num_hidden_layers=62, num_attention_heads=32,
        num_key_value_heads=16, head_dim=128)),
    Released("kitft/Llama-3.3-70B-NLA-L53", "meta-llama/Llama-3.3-70B-Instruct", 53, "llama", dict(
        vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8, tie_word_embeddings=False)),
]


def config_of(released: Released):
    from transformers import AutoConfig

    return AutoConfig.for_model(released.family, **released.shape)


def _meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def parameter_counts(config, layer: int) -> dict[str, int]:
    """Parameters of the full causal LM, and of the AR's part of it: embeddings + blocks 0..K."""
    model = _meta_model(config)
    unique = {id(p): p for p in model.parameters()}.values()  # a tied lm_head counts once
    embeddings = model.get_input_embeddings().weight.numel()
    blocks = model.model.layers
    per_block = [sum(p.numel() for p in block.parameters()) for block in blocks]
    return {"full": sum(p.numel() for p in unique), "ar_backbone": embeddings + sum(per_block[: layer + 1])}


def nla_memory(config, layer: int, bytes_per_parameter: int = 2) -> dict[str, float]:
    """GB (1e9 bytes) that reading holds: the AV, the AR (with its fp32 d x d head), the target, the total."""
    counts = parameter_counts(config, layer)
    d = config.hidden_size
    av = counts["full"] * bytes_per_parameter
    ar = counts["ar_backbone"] * bytes_per_parameter + d * d * 4
    target = counts["full"] * bytes_per_parameter
    return {"parameters": counts["full"], "ar_parameters": counts["ar_backbone"] + d * d,
            "av_gb": av / 1e9, "ar_gb": ar / 1e9, "target_gb": target / 1e9, "total_gb": (av + ar + target) / 1e9}
