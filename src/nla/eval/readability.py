"""Is an explanation still readable English a person can check? Two measurements for `nla eval`.

- quotes: every quoted span ("...") is looked up in the context it claims to quote; the
  share found there is the quote precision (a quote found nowhere is confabulated).
- perplexity: of the explanation text under the plain target (adapters off, no context),
  next to the perplexity of the warm-start texts: RL that drifts into a private code
  shows up as a perplexity far above the warm start's.
"""

from __future__ import annotations

import math

import torch

from nla.eval.claim_text import locate_quote, looks_ahead, quote_spans, split_claims
from nla.models.activations import pad_right


def context_quotes(text: str) -> list[str]:
    """The explanation's quoted spans that claim to quote the context (not those in a claim about what comes
    next); the same quote finder as `nla trace`'s claim checks."""
    spans = quote_spans(text)
    return [text[start:end] for claim in split_claims(text) if not looks_ahead(claim.text)
            for start, end in spans if claim.start <= start < claim.end]


def quote_counts(text: str, context: str) -> tuple[int, int]:
    """(found, total) of the explanation's context quotes, found with `nla trace`'s matcher."""
    quotes = context_quotes(text)
    return sum(locate_quote(quote, context) == "context" for quote in quotes), len(quotes)


def quote_precision(explanations: list[str | None], contexts: list[str]) -> dict:
    """Of the quoted spans that claim to quote the context, the share found there."""
    counts = [quote_counts(text, context) for text, context in zip(explanations, contexts) if text]
    found, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return {"quotes": total, "found_in_context": found, "precision": found / total if total else math.nan}


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], *, batch_size: int = 16, bos: bool = True) -> float:
    """exp(mean next-token NLL) of the texts under `model` read without any context."""
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        start = [tokenizer.bos_token_id] if bos and tokenizer.bos_token_id is not None else []
        rows.append(start + ids)
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for begin in range(0, len(rows), batch_size):
        ids, mask = pad_right(rows[begin : begin + batch_size], 0, device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets, weight = ids[:, 1:], mask[:, 1:].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        total_nll += float((nll * weight).sum())
        total_tokens += int(weight.sum())
    return math.exp(total_nll / max(1, total_tokens))
