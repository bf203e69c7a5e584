"""Per-claim trust checks: which parts of an explanation the reconstruction needs, and which quotes are real.

The published NLAs ground only ~27-51% of their claims in the text, and quoted spans, which
carry much of the reconstruction signal, are often confabulated. So each explanation is:

1. split into claims: sentences, and clauses at ';' and line breaks (a quoted span is never split;
   the rules of the text are in eval/claim_text.py, which eval's readability shares);
2. weighed claim by claim, leave-one-out: the AR reconstructs the explanation without that
   claim, and the claim's weight is how much the token's score (1 - MSE/B) drops. All variants
   of a batch go through the AR together. A weight below NEGLIGIBLE_WEIGHT means the round trip
   does not need the claim (it may still be true; it is just not what carries the activation);
3. checked for quotes: each quoted span ("...", “...”, '...', `...`) is looked up in the context,
   the text up to and including the token. A quote found there is grounded; one that occurs only
   after the token ("later": the activation cannot have seen it) or nowhere ("absent") is flagged
   as possibly confabulated. A quoted span in a claim about what comes next ("it expects 'the'")
   is a prediction, not a quotation: it is checked the same way but never flagged ("later" then
   means the prediction came true somewhere after the token). Which claims look ahead is read
   from cue words (next, expects, predicts, continues, ...): a heuristic, not a parse.
"""

from __future__ import annotations

import torch

from nla.autoencoder.nla import NLA
from nla.autoencoder.reconstructor import reconstruction_mse
from nla.eval.claim_text import (
    NEGLIGIBLE_WEIGHT,
    Claim,
    Quote,
    locate_quote,
    looks_ahead,
    predicted_by,
    quote_spans,
    split_claims,
    without,
)


def check_claims(nla: NLA, texts: list[str | None], vectors: torch.Tensor, mse: list[float | None],
                 contexts: list[str], laters: list[str] | None = None, *, denominator: float,
                 batch_size: int = 32, next_tokens: list[list[str]] | None = None) -> list[list[Claim]]:
    """Claims of each explanation with their leave-one-out weights and quote checks ([] where it failed).
    `mse` is each full explanation's reconstruction error; `laters` the text after each token; `next_tokens`
    the target's likeliest next tokens at each, against which quoted predictions are checked."""
    laters = laters or [""] * len(texts)
    candidates = next_tokens or [None] * len(texts)
    per_text: list[list[Claim]] = []
    variants, owners = [], []  # every explanation-minus-one-claim, and which row it belongs to
    for row, text in enumerate(texts):
        claims = split_claims(text) if text is not None else []
        for claim in claims:
            ahead = looks_ahead(claim.text)
            claim.quotes = [Quote(text[s:e], s, e, locate_quote(text[s:e], contexts[row], laters[row]), ahead,
                                  predicted_by(text[s:e], candidates[row]) if ahead else None)
                            for s, e in quote_spans(text) if claim.start <= s < claim.end]
            variants.append(without(text, claim))
            owners.append(row)
        per_text.append(claims)
    if variants:
        errors = reconstruction_mse(nla.reconstruct(variants, batch_size=batch_size), vectors[owners].float().cpu())
        flat = [claim for claims in per_text for claim in claims]
        for claim, row, error in zip(flat, owners, errors.tolist()):
            claim.weight = (error - mse[row]) / denominator
    return per_text


def claims_report(claim_lists: list[list[dict]]) -> dict:
    """The share of claims the reconstruction does not need, and of quotes not found before the token,
    over explanations' claims in their serialised form (Claim.to_dict)."""
    claims = [c for cs in claim_lists for c in cs]
    quotes = [q for c in claims for q in c["quotes"] if not q["prediction"]]
    predictions = [q for c in claims for q in c["quotes"] if q["prediction"]]
    negligible = sum(bool(c["negligible"]) for c in claims)
    flagged = sum(q["flagged"] for q in quotes)
    checked = [q for q in predictions if q.get("predicted") is not None]
    return {"explanations": sum(bool(cs) for cs in claim_lists), "claims": len(claims), "negligible": negligible,
            "negligible_share": negligible / len(claims) if claims else None, "quotes": len(quotes),
            "flagged_quotes": flagged, "flagged_share": flagged / len(quotes) if quotes else None,
            "quoted_predictions": len(predictions), "checked_predictions": len(checked),
            "supported_prediction_share": sum(q["predicted"] for q in checked) / len(checked) if checked else None,
            "negligible_weight": NEGLIGIBLE_WEIGHT}
