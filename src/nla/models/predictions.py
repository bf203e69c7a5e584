"""The target's own next-token predictions at chosen positions (facts for the offline explainer).

One forward pass per document serves all of its sampled positions: the decoder's final
hidden states are read at those positions only, and only they go through the lm_head.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from nla.models.activations import length_batches, pad_right
from nla.models.adapters import text_config
from nla.models.target import Target


@torch.no_grad()
def next_token_candidates(target: Target, sequences: list[list[int]], positions: list[list[int]], k: int = 3,
                          batch_tokens: int = 8192, progress: str | None = None) -> list[list[list[tuple[str, float]]]]:
    """For each sequence and each of its positions, the k most likely next tokens as (text, probability).
    `progress`: the label of a per-document progress bar (None: no bar)."""
    decoder = target.adapter.decoder(target.model)
    head = target.model.get_output_embeddings()
    softcap = getattr(text_config(target.model.config), "final_logit_softcapping", None)
    results: list[list[list[tuple[str, float]]]] = [[] for _ in sequences]
    bar = tqdm(total=len(sequences), desc=progress, unit="doc", disable=progress is None)
    for batch in length_batches([len(s) for s in sequences], batch_tokens):
        ids, mask = pad_right([sequences[i] for i in batch], target.pad_id, target.device)
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, T, d), normed
        for row, i in enumerate(batch):
            logits = head(hidden[row, positions[i]]).float()  # (P, vocab)
            if softcap:  # Gemma 2 style: the model's own logits are soft-capped
                logits = torch.tanh(logits / softcap) * softcap
            probs, tokens = logits.softmax(dim=-1).topk(k, dim=-1)
            results[i] = [[(target.tokenizer.decode([t]), float(p)) for t, p in zip(tt.tolist(), pp.tolist())]
                          for tt, pp in zip(tokens, probs)]
        bar.update(len(batch))
    bar.close()
    return results
