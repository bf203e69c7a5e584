"""The target's own next-token predictions at the end of each context (facts for the offline explainer)."""

from __future__ import annotations

import torch

from nla.models.activations import length_batches
from nla.models.target import Target


def pad_left(sequences: list[list[int]], pad_id: int, device: torch.device):
    """(input_ids, attention_mask, position_ids), left-padded so every row ends at the last column."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    # Positions count real tokens only, so a padded row sees the same positions as alone.
    positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
    return ids.to(device), mask.to(device), positions.to(device)


@torch.no_grad()
def next_token_candidates(target: Target, sequences: list[list[int]], k: int = 3,
                          batch_tokens: int = 8192) -> list[list[tuple[str, float]]]:
    """For each sequence, the k most likely next tokens as (decoded text, probability)."""
    results: list[list[tuple[str, float]]] = [[] for _ in sequences]
    for batch in length_batches([len(s) for s in sequences], batch_tokens):
        ids, mask, positions = pad_left([sequences[i] for i in batch], target.pad_id, target.device)
        logits = target.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1,
                              use_cache=False).logits[:, -1].float()
        probs, tokens = logits.softmax(dim=-1).topk(k, dim=-1)
        for row, i in enumerate(batch):
            results[i] = [(target.tokenizer.decode([t]), float(p)) for t, p in zip(tokens[row].tolist(), probs[row].tolist())]
    return results
