"""Per-claim trust checks: which parts of an explanation the reconstruction needs, and which quotes are real.

The published NLAs ground only ~27-51% of their claims in the text, and quoted spans, which
carry much of the reconstruction signal, are often confabulated. So each explanation is:

1. split into claims: sentences, and clauses at ';' and line breaks (a quoted span is never split);
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

import re
from dataclasses import asdict, dataclass, field

import torch

from nla.autoencoder.nla import NLA
from nla.autoencoder.reconstructor import reconstruction_mse

NEGLIGIBLE_WEIGHT = 0.01  # removing the claim costs less than one point of score (a hundredth of B in MSE)

# Straight and curly double quotes, curly single quotes, backticks, and straight single quotes that are not
# apostrophes (no word character just outside them).
# Straight double quotes may span lines: a quote of the recent context keeps its line breaks.
_QUOTE = re.compile(r'"([^"]{1,300})"|“([^”\n]{1,300})”|‘([^’\n]{1,300})’|`([^`\n]{1,300})`'
                    r"|(?<!\w)'([^'\n]{1,300}?)'(?!\w)")
# A sentence ends at . ! ? before whitespace and a non-lowercase character ("e.g. the" does not end one).
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[^a-z\s])|(?<=;)\s*|\n+")
_LIST_MARKER = re.compile(r"^(?:[-*•]\s+|\d{1,2}[.)]\s+)")
_ONE_CHARACTER = re.compile(r"(?<!\w)'[^\n]'(?!\w)")
_ELLIPSIS = re.compile(r"\.\.\.|…")
_LOOKS_AHEAD = re.compile(r"\b(next|expect\w*|predict\w*|continu\w*|follow\w*|upcoming|anticipat\w*|likely|will)\b",
                          re.IGNORECASE)


@dataclass
class Quote:
    text: str
    start: int  # character offsets in the explanation, quote marks excluded
    end: int
    where: str  # "context": grounded; "later": only after the token; "absent": nowhere in the text
    prediction: bool = False  # quoted in a claim about what comes next: not a quotation of the text
    predicted: bool | None = None  # a prediction among the target's own likeliest next tokens; None: not checked

    @property
    def flagged(self) -> bool:
        return not self.prediction and self.where != "context"


@dataclass
class Claim:
    text: str
    start: int  # character offsets in the explanation
    end: int
    weight: float | None = None  # score drop when the claim is removed; None until weighed
    quotes: list[Quote] = field(default_factory=list)

    @property
    def negligible(self) -> bool | None:
        return None if self.weight is None else self.weight < NEGLIGIBLE_WEIGHT

    def to_dict(self) -> dict:
        data = asdict(self)
        data["negligible"] = self.negligible
        for quote, obj in zip(data["quotes"], self.quotes):
            quote["flagged"] = obj.flagged
        return data


def quote_spans(text: str, *, blank: bool = False) -> list[tuple[int, int]]:
    """(start, end) of each quoted span's content. A single quoted character ('"', 'a') is masked first,
    so a quoted quote mark does not pair with the next quote mark of the explanation. `blank` keeps quotes of
    whitespace only (a predicted newline written as a real line break between quote marks): no quote to check,
    but not a place to split a claim either."""
    masked = _ONE_CHARACTER.sub(lambda m: "'x'", text)
    spans = []
    for match in _QUOTE.finditer(masked):
        group = next(g for g in range(1, 6) if match.group(g) is not None)
        start, end = match.span(group)
        if blank or text[start:end].strip():
            spans.append((start, end))
    return spans


def split_claims(text: str) -> list[Claim]:
    """The explanation's claims with their offsets; quoted spans are masked so their punctuation never splits."""
    masked = list(text)
    for start, end in quote_spans(text, blank=True):
        masked[start:end] = "x" * (end - start)
    cuts = [0] + [m.end() for m in _BOUNDARY.finditer("".join(masked))] + [len(text)]
    claims = []
    for start, end in zip(cuts, cuts[1:]):
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        marker = _LIST_MARKER.match(piece[lead:])
        start += lead + (marker.end() if marker else 0)
        end = start + len(text[start:end].rstrip())
        if re.search(r"\w", text[start:end]):
            claims.append(Claim(text[start:end], start, end))
    return claims


def looks_ahead(claim_text: str) -> bool:
    """A claim about what comes next: its quotes are predictions, not quotes of the context."""
    return bool(_LOOKS_AHEAD.search(claim_text))


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def locate_quote(quote: str, context: str, later: str = "") -> str:
    """Where a quote occurs: "context", "later" or "absent". Case and spacing are ignored, and each
    piece of a quote with an ellipsis must occur."""
    pieces = [_normalise(p).strip(" .,;:!?") for p in _ELLIPSIS.split(quote)]
    pieces = [p for p in pieces if p]
    if all(p in _normalise(context) for p in pieces):
        return "context"
    if later and all(p in _normalise(context + later) for p in pieces):
        return "later"
    return "absent"


def without(text: str, claim: Claim) -> str:
    return " ".join((text[: claim.start] + " " + text[claim.end :]).split())


def predicted_by(quote: str, candidates: list[str] | None) -> bool | None:
    """Whether a predicted continuation starts with one of the target's likeliest next tokens (case and
    surrounding space ignored); None without candidates."""
    if candidates is None:
        return None
    said = _normalise(quote).strip()
    return any(c and (said == c or said.startswith(c)) for c in (_normalise(t).strip() for t in candidates))


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
