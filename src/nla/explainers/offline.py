"""The offline explainer: a short, checkable explanation built only from facts, with no network or API key.

Three or four sentences, in this order (see docs/quality.md for the measurements behind it):

    A news story about science. It mentions "volcano", "Etna" and "lava". Next it expects " erupt", " be" or
    " have". The text so far ends: "…scientists say the volcano could"

1. What the passage is (the document's genre and topic: the corpus's labels).
2. With `--salient-words K`, what the whole context is about in its own words: its K most
   distinctive content words (explainers/salient.py), each of which occurs in the context,
   quoted so the claim checker grounds them, and first those of a chat's own system prompt
   ("Its system prompt mentions "pirate" and "captain"."). The labels name 25 topics; these
   name anything, a theme planted in a system prompt included.
3. What the target itself predicts next: its top next tokens at that position.
4. An exact quote of the last few tokens of the context (`ExplainRequest.quote`), last,
   so the reconstructor reads the quoted words right before its fixed suffix, as the
   target read them. A reconstructor that reads true quotes of the recent context
   recovers most of what one reading the whole context recovers (docs/quality.md),
   while a short prose summary recovers almost nothing.

The frame is fixed: varied wording would only add text the verbalizer must guess and
the reconstructor must ignore. Every quoted span is a substring of the context, so a
reader (and `nla trace`'s claim checks) can verify it.
"""

from __future__ import annotations

import re

from nla.explainers.base import ExplainRequest


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


# Corpus genre labels that read badly as a noun ("a how to about ..."); others are used as they are.
GENRE_NOUNS = {"how-to": "how-to guide", "news": "news story", "pros-cons": "list of pros and cons",
               "fun-facts": "list of fun facts", "kids": "text for children", "misconceptions": "text on misconceptions",
               "debug-my-thinking": "check of someone's reasoning", "api-docstring": "API docstring",
               "module-docstring": "module docstring", "reference": "reference page", "faq": "FAQ",
               "persuasive": "persuasive text", "opinion": "opinion piece", "lesson-plan": "lesson plan",
               "product": "product description", "instructions": "set of instructions", "history": "history text"}


def setting(r: ExplainRequest) -> str:
    noun = GENRE_NOUNS.get(r.genre, (r.genre.replace("-", " ") or "text").strip())
    about = f" about {r.topic}" if r.topic else ""
    if r.source.endswith("chat"):  # the genre of a chat transcript is what the user asked for
        return f"A chat asking for {_a(noun)}{about}."
    sentence = f"{_a(noun)}{about}."
    return sentence[:1].upper() + sentence[1:]


def _listed(options: list[str]) -> str:
    return ", ".join(options[:-1]) + f" and {options[-1]}" if len(options) > 1 else options[0]


def mentions(words: tuple[str, ...], subject: str) -> str | None:
    """'Its system prompt mentions "chess" and "pawns".' (None for no words): the salient-words sentence."""
    return f"{subject} mentions " + _listed([f'"{word}"' for word in words]) + "." if words else None


SYSTEM_SUBJECT = "Its system prompt"


def about(r: ExplainRequest) -> str | None:
    parts = (mentions(r.system_words, SYSTEM_SUBJECT), mentions(r.salient, "It"))
    return " ".join(p for p in parts if p) or None


QUOTE_START = "The text so far ends:"
_MENTIONS = re.compile(rf'(?:{SYSTEM_SUBJECT}|It) mentions (?:"[^"]*"(?:, | and )?)+\.')


def split_about(text: str) -> tuple[str, str]:
    """An offline explanation's salient-words sentences (what `about` wrote), and the text without them. The
    quote, last, is never searched: it may hold anything."""
    head, cut, quote = text.partition(" " + QUOTE_START)
    found = _MENTIONS.findall(head)
    for sentence in found:
        head = head.replace(" " + sentence, "", 1) if " " + sentence in head else head.replace(sentence, "", 1)
    return " ".join(found), (head + cut + quote).strip()


def expectation(r: ExplainRequest) -> str | None:
    if not r.next_tokens:
        return None
    options = [f'"{token}"' for token, _ in r.next_tokens[:3]]
    listed = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
    return f"Next it expects {listed}."


def recent(r: ExplainRequest) -> str:
    quote = r.quote if r.quote is not None else r.context[-40:]
    cut = "…" if len(quote) < len(r.context) else ""
    return f'{QUOTE_START} "{cut}{quote}"'


def offline_explanation(r: ExplainRequest) -> str:
    return " ".join(part for part in (setting(r), about(r), expectation(r), recent(r)) if part)


class OfflineExplainer:
    name = "offline"

    def explain(self, requests: list[ExplainRequest]) -> list[str | None]:
        return [offline_explanation(r) for r in requests]
