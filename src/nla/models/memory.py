"""What reading with an NLA holds in memory, from parameter counts (models built on the meta device: no weights).

    nla_memory(config, layer=20)   # bytes of the AV, the AR, the target and their sum

Reading a text holds three models: the AV (the full causal LM), the AR (embeddings and blocks 0..K,
no final norm, no lm_head, plus the d x d value head, which nla keeps in fp32) and the target (the
full causal LM). Gemma 3 12B/27B count their text decoder only: nla never loads their vision tower.
Activations and the KV cache of a few hundred tokens add little on top at these batch sizes.

RELEASED lists the published NLAs with their targets' decoder shapes (the public config.json values).

Below them: the estimate of what one training step adds to loaded weights (`check_batch_fits`), which
train-ar, train-av and rl check against the free memory before they start.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nla.errors import NLAError


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


# ---------------------------------------------------------------- will a training step fit?
#
# A run whose batch does not fit is killed by the system minutes in, with no message. Before a trainer
# starts, it estimates what one step adds to the loaded weights and compares it with the memory free
# now. The estimate counts what a step cannot avoid holding (stored activations for the backward pass,
# fp32 logits and their gradient, the KV cache of a rollout, the optimizer's state), so it errs low:
# a refusal means the step clearly does not fit.

GB = 1e9


def available_memory(device: torch.device) -> int | None:
    """Bytes free on `device`: the GPU's free memory, or the RAM available to this process (the machine's,
    capped by a cgroup limit in a container); None where it cannot be known (then nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    known = [x for x in (_meminfo_available(), _cgroup_headroom()) if x is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil  # not a dependency; used where /proc is missing (macOS)
    except ImportError:
        return None
    return psutil.virtual_memory().available


def _cgroup_headroom() -> int | None:
    """memory.max - memory.current of this cgroup (v2), when a limit is set."""
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def stored_activation_bytes(config, tokens: int, layers: int, bytes_per_value: int) -> int:
    """What the backward pass keeps of `layers` decoder blocks for `tokens` tokens: per block about 10 d + 4 i
    values a token (norms, projections, the MLP's gate, up and product), none of attention's T x T."""
    d = config.hidden_size
    intermediate = getattr(config, "intermediate_size", None) or 4 * d
    return tokens * layers * (10 * d + 4 * intermediate) * bytes_per_value


def logit_bytes(config, tokens: int, *, backward: bool) -> int:
    """fp32 logits over the vocabulary (the loss upcasts them), their log-softmax and, to train, its gradient."""
    return tokens * config.vocab_size * 4 * (3 if backward else 2)


def kv_cache_bytes(config, tokens: int, bytes_per_value: int) -> int:
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return tokens * config.num_hidden_layers * 2 * heads * head_dim * bytes_per_value


def rl_sample_bytes(config, *, prompt_tokens: int, response_tokens: int, bytes_per_value: int,
                    reference: bool) -> int:
    """What one sampled explanation costs an RL step at its peak: its KV cache while sampling, or (larger)
    the policy update's stored activations and logits with their gradient, plus the KL reference's logits.
    The AR's update comes after that and reads shorter sequences through fewer blocks."""
    tokens = prompt_tokens + response_tokens
    rollout = kv_cache_bytes(config, tokens, bytes_per_value)
    update = (stored_activation_bytes(config, tokens, config.num_hidden_layers, bytes_per_value)
              + logit_bytes(config, response_tokens + 1, backward=True)
              + (logit_bytes(config, response_tokens + 1, backward=False) if reference else 0))
    return max(rollout, update)


def optimizer_bytes(parameters) -> int:
    """AdamW on the trainable tensors: their gradient and two moments."""
    return sum(3 * p.numel() * p.element_size() for p in parameters if p.requires_grad)


def check_batch_fits(per_row: int, rows: int, fixed: int, device, *, processes: int = 1, flag: str,
                     what: str) -> None:
    """Refuse, in one line naming `flag`, a step of `rows` rows (over all processes, `per_row` bytes each, plus
    `fixed` per process) that needs more than the memory free on `device`. Processes on the CPU share its
    RAM; on GPUs each holds its own share of the rows."""

    available = available_memory(device)
    if torch.device(device).type == "cpu":
        fixed = fixed * processes
    else:
        per_row = per_row / processes
    need = fixed + per_row * rows
    if available is None or need <= available:
        return
    fits = int((available - fixed) // per_row) if per_row else 0
    fix = f"lower {flag} to {fits} or less" if fits >= 1 else "even one row does not fit: use a smaller model"
    raise NLAError(f"{flag} {rows} needs about {_size(need)} per step ({what}), but {_size(available)} is free "
                   f"on {torch.device(device).type}; {fix}, or a machine with more memory")


def _size(size: float) -> str:
    return f"{size / GB:.1f} GB" if size >= GB / 10 else f"{size / 1e6:.1f} MB"
