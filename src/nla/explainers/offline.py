"""The offline explainer: an explanation built only from facts, with no network and no API key.

Facts used: the document's genre and topic, a quote of the last few words, what kind
of token ends the context, and the target model's own most likely next tokens there.
Wording varies by a hash of the row id (several phrasings for each paragraph, two or
three paragraphs), so the verbalizer learns to say these things, not one sentence frame.
"""

from __future__ import annotations

import hashlib
import re

from nla.explainers.base import ExplainRequest

QUOTE_WORDS = 8


def token_role(token: str) -> str:
    """What kind of token closes the context, in words."""
    stripped = token.strip()
    if not stripped:
        return "a line break" if "\n" in token else "a space"
    if re.fullmatch(r"[.!?]+", stripped):
        return "the end of a sentence"
    if re.fullmatch(r"[,;:]", stripped):
        return "a pause inside a sentence"
    if re.fullmatch(r"[\W_]+", stripped):
        return f"the symbol {stripped!r}"
    if stripped.isdigit():
        return "a number"
    if token[:1].isspace():
        return f"the word {stripped!r}" if stripped.isalpha() else f"the start of {stripped!r}"
    return f"a piece of a longer word ({stripped!r})"


def _choice(key: str, options: list[str]) -> str:
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


def _quote(context: str) -> str:
    words = context.replace("\n", " ").split()
    return " ".join(words[-QUOTE_WORDS:])


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _setting(r: ExplainRequest) -> str:
    kind = _a(r.genre.replace("-", " ") or "text")
    about = f" about {r.topic}" if r.topic else ""
    return _choice(r.row_id + "setting", [
        f"The model is reading {kind}{about}.",
        f"This is {kind}{about}, and the model is following along.",
        f"The passage is {kind}{about}; the model keeps track of that.",
        f"The model recognises the text as {kind}{about}.",
    ])


def _recent(r: ExplainRequest) -> str:
    quote, role = _quote(r.context), token_role(r.token)
    return _choice(r.row_id + "recent", [
        f"The most recent words are \"{quote}\", ending on {role}.",
        f"It has just read \"{quote}\", and the current token is {role}.",
        f"Right now it sits at {role}, after \"{quote}\".",
    ])


def _expectation(r: ExplainRequest) -> str | None:
    if not r.next_tokens:
        return None
    options = [repr(t.strip() or t) for t, _ in r.next_tokens[:3]]
    listed = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
    confident = r.next_tokens[0][1] >= 0.5
    return _choice(r.row_id + "next", [
        f"It expects the text to continue with {listed}" + (", and it is fairly sure." if confident else "."),
        f"Next it predicts {listed}" + (" with some confidence." if confident else ", though it is unsure."),
        f"What should follow, in its view, is {listed}.",
    ])


def offline_explanation(r: ExplainRequest) -> str:
    """Two or three short paragraphs: the setting and the recent words, then what comes next."""
    paragraphs = [f"{_setting(r)} {_recent(r)}"]
    expectation = _expectation(r)
    if expectation:
        paragraphs.append(expectation)
    return "\n\n".join(paragraphs)


class OfflineExplainer:
    name = "offline"

    def explain(self, requests: list[ExplainRequest]) -> list[str | None]:
        return [offline_explanation(r) for r in requests]
