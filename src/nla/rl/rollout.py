"""Rollouts: sample explanations from the AV, keeping each token's log-prob under the sampling distribution.

The AV's prompt carries the activation in one token's embedding, so a generation backend takes
prompt *embeddings*, not token ids. Any backend with `generate(prompt_embeds, ...) -> Rollout`
plugs into the trainer; `HFRollouts` is the built-in one (HF `generate` from `inputs_embeds` with
a KV cache, the whole batch at once). A vLLM backend would take the same embeddings as prompt
embeddings and receive the policy's weights through `sync(model)` before each rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from nla.autoencoder.verbalizer import Explanation, parse_explanation


@dataclass
class Rollout:
    token_ids: list[list[int]]  # per sample, the response tokens, EOS included when the sample ended
    logprobs: torch.Tensor  # (N, R) log-prob of each token under the sampling distribution; 0 past the end
    finished: list[bool]  # ended with EOS before the length cap

    def explanations(self, tokenizer) -> list[Explanation]:
        """Decoded samples; a truncated sample has no text (it is a failure even if its tags closed)."""
        out = []
        for ids, finished in zip(self.token_ids, self.finished):
            answer = tokenizer.decode(ids, skip_special_tokens=True)
            out.append(Explanation(parse_explanation(answer) if finished else None, answer, len(ids), not finished))
        return out


class RolloutBackend(Protocol):
    def sync(self, model: torch.nn.Module) -> None:
        """Make the next rollouts use the policy's current weights."""

    def generate(self, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                 temperature: float) -> Rollout:
        """Sample one response per prompt row (prompt_embeds (N, P, d))."""


class HFRollouts:
    """Batched sampling with HF `generate` on the policy itself (no copy, so `sync` has nothing to do)."""

    def __init__(self, model: torch.nn.Module, eos_id: int, pad_id: int):
        self.model, self.eos_id, self.pad_id = model, eos_id, pad_id

    def sync(self, model: torch.nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def generate(self, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                 temperature: float) -> Rollout:
        out = self.model.generate(inputs_embeds=prompt_embeds, attention_mask=attention_mask, do_sample=True,
                                  temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                  eos_token_id=self.eos_id, pad_token_id=self.pad_id, output_logits=True,
                                  return_dict_in_generate=True)
        sequences = out.sequences  # (N, R): only the new tokens when generating from embeddings
        logits = torch.stack(out.logits, dim=1).float() / temperature  # (N, R, V), raw logits of each step
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, sequences[..., None]).squeeze(-1)  # (N, R)
        token_ids, finished = [], []
        for row in sequences.tolist():
            ended = self.eos_id in row
            token_ids.append(row[: row.index(self.eos_id) + 1] if ended else row)
            finished.append(ended)
        for i, ids in enumerate(token_ids):
            logprobs[i, len(ids):] = 0.0
        return Rollout(token_ids, logprobs.cpu(), finished)
