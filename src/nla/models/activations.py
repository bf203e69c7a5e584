"""Read the residual stream at one layer, running only the blocks that layer needs.

Layer K is the output of decoder block K (HF `hidden_states[K+1]`). A forward hook
on block K stores its output and stops the forward pass, so blocks K+1.., the final
norm and the lm_head never run. This works for any family the adapters know,
without editing configs or copying weights.
"""

from __future__ import annotations

from typing import Iterator

import torch

from nla.models.target import Target


class _ReachedLayer(Exception):
    """Raised from the hook to stop the forward pass once block K has run."""


def hidden_at_layer(model: torch.nn.Module, layers: torch.nn.ModuleList, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """Output of block `layer` (B, T, d), running blocks 0..layer only. Gradients flow if enabled."""
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _ReachedLayer

    handle = layers[layer].register_forward_hook(hook)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _ReachedLayer:
        pass
    finally:
        handle.remove()
    return captured[0]


@torch.no_grad()
def residual_stream(target: Target, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The frozen target's block `layer` output for a right-padded batch: (B, T, d) in the model's dtype."""
    return hidden_at_layer(target.model, target.layers, input_ids, attention_mask, layer)


def length_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Group sequence indices, longest first, so that rows x longest row <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_right(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T). Right padding leaves a causal model's real tokens exact."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def batched_residual_stream(
    target: Target, sequences: list[list[int]], layer: int, batch_tokens: int = 8192
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield (indices into `sequences`, fp32 CPU activations (B, T, d)) batch by batch."""
    for batch in length_batches([len(s) for s in sequences], batch_tokens):
        ids, mask = pad_right([sequences[i] for i in batch], target.pad_id, target.device)
        yield batch, residual_stream(target, ids, mask, layer).float().cpu()
