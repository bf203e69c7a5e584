"""The injection marker: a rare character the tokenizer maps to exactly one token.

The verbalizer's prompt holds the marker once; its token embedding is overwritten
with the (rescaled) activation. The released NLAs scan U+3200..U+33FF and take the
first single-token character (Qwen `㈎`, Gemma-3 `㈜`, Llama-3.3 `㎡`). Small
vocabularies such as SmolLM2's have none there, so we then scan a few wider symbol
ranges, and last the tokenizer's own vocabulary from its rarest (highest-id) end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nla.errors import NLAError

# Scanned in this order; the first range is the released NLAs' choice.
MARKER_RANGES = [
    (0x3200, 0x33FF),  # enclosed CJK letters and months, CJK compatibility
    (0x2460, 0x24FF),  # enclosed alphanumerics
    (0x25A0, 0x25FF),  # geometric shapes
    (0x2190, 0x21FF),  # arrows
    (0x2600, 0x26FF),  # miscellaneous symbols
]
VOCAB_SCAN_LIMIT = 5000  # how many of the highest-id vocabulary entries to try last


@dataclass(frozen=True)
class Marker:
    char: str
    token_id: int


def _single_token(tokenizer, text: str) -> int | None:
    """The token id if `text` is exactly one non-special token, alone and between letters."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id or ids[0] in tokenizer.all_special_ids:
        return None
    if tokenizer.decode(ids) != text:
        return None
    # A merge with adjacent punctuation would hide the injection site (the prompt's own
    # neighbours are checked again when the verbalizer's prompt is built).
    if tokenizer.encode(f"({text})", add_special_tokens=False).count(ids[0]) != 1:
        return None
    return ids[0]


def _candidates(tokenizer):
    for low, high in MARKER_RANGES:
        for code in range(low, high + 1):
            token_id = _single_token(tokenizer, chr(code))
            if token_id is not None:
                yield Marker(chr(code), token_id)
    vocab_size = len(tokenizer)
    for token_id in range(vocab_size - 1, max(vocab_size - 1 - VOCAB_SCAN_LIMIT, -1), -1):
        text = tokenizer.decode([token_id])
        if text.strip() == text and text and not text.isalnum() and _single_token(tokenizer, text) == token_id:
            yield Marker(text, token_id)


def find_marker(tokenizer, fits: Callable[[Marker], bool] = lambda marker: True) -> Marker:
    """The first single-token character in MARKER_RANGES, else the rarest clean vocabulary entry,
    that also `fits` (e.g. stays one token inside the verbalizer's prompt)."""
    for marker in _candidates(tokenizer):
        if fits(marker):
            return marker
    raise NLAError("found no character or rare token that this tokenizer keeps as exactly one token; "
                   "pass an injection marker explicitly")
