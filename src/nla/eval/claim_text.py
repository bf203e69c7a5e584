"""The claims of an explanation, read from its text alone: sentences and clauses, the quoted spans in each,
and where a quote occurs in the context. `reading/claims.py` weighs the claims with the AR; `eval/readability.py`
counts grounded quotes with these same rules.

A claim is a sentence, or a clause at ';' and line breaks (a quoted span is never split). A quoted span
("...", “...”, '...', `...`) found in the context, the text up to and including the token, is grounded; one
that occurs only after the token ("later") or nowhere ("absent") is possibly confabulated. A quoted span in a
claim about what comes next ("it expects 'the'") is a prediction, not a quotation; which claims look ahead is
read from cue words (next, expects, predicts, continues, ...): a heuristic, not a parse.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

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
