"""The salient words of a context: the content words that say what it is about, in its own words.

The corpus labels ("a chat asking for a story about science") can only name 25 topics; a
context's own distinctive words can name anything, and each occurs in the context, so the
claim checker grounds it like a quote. A word's salience is TF-IDF over the context up to
the token: (1 + log count) · log(N / document frequency), the frequencies counted over the
corpus the activations came from. A word said once in a system prompt ("volcanoes") that
few documents share outranks the words every chat repeats ("assistant", "help").

A chat's system prompt gets words of its own (`system_words`): a persona or a hidden instruction
is what an audit looks for, and a few words of a long answer would otherwise crowd it out.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

# Words of at least three letters; apostrophes inside a word stay ("don't" is one word, and a stop word).
_WORD = re.compile(r"[A-Za-z][A-Za-z']+[A-Za-z]")
_LAST_WORD = re.compile(r"[A-Za-z']+$")
_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>|<[a-z_]{2,20}>")  # chat-template markers, not words of the text
STOP_WORDS = frozenset("""
about above after again against all also always among and another any are aren't around because been before
being below between both but can can't cannot could couldn't did didn't does doesn't doing don't down during each
either else even ever every few for from further get gets getting give given gives got had hadn't has hasn't have
haven't having her here hers herself him himself his how however i'd i'll i'm i've into isn't it's its itself
just let let's like made make makes making many may might more most much must mustn't myself never not now off
often once one only other others our ours ourselves out over own per put quite rather really same say says see
seem seems shall she she'd she'll she's should shouldn't since some something still such sure take than that
that's the their theirs them themselves then there there's these they they'd they'll they're they've thing
things this those though through thus too toward under until upon use used uses using very want was wasn't way
we'd we'll we're we've well were weren't what what's when where where's whether which while who who's whom whose
why will with within without won't would wouldn't yes yet you you'd you'll you're you've your yours yourself
yourselves
""".split())


def content_words(text: str) -> list[str]:
    """The text's words in order, lower-cased, without stop words and chat-template markers."""
    words = (w.lower() for w in _WORD.findall(_SPECIAL.sub(" ", text)))
    return [w for w in words if w not in STOP_WORDS]


class SalientWords:
    """Document frequencies of a corpus, and the top-k salient words of a context against them."""

    def __init__(self, documents: Iterable[str]):
        self.frequency: Counter[str] = Counter()
        self.documents = 0
        for text in documents:
            self.frequency.update(set(content_words(text)))
            self.documents += 1

    def idf(self, word: str) -> float:
        return math.log((1 + self.documents) / (1 + self.frequency[word]))

    def top(self, context: str, k: int, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The k most salient words, most salient first, each as it is written at its first occurrence.
        The context's last word is left out when the context ends inside it (it may be cut short; the
        explanation's quote has it), and so are the words of `exclude` (already named)."""
        context = _LAST_WORD.sub("", context)
        written: dict[str, str] = {}
        for w in _WORD.findall(_SPECIAL.sub(" ", context)):
            if w.lower() not in STOP_WORDS:
                written.setdefault(w.lower(), w)
        skip = {w.lower() for w in exclude}
        counts = Counter(w for w in content_words(context) if w not in skip)
        score = {w: (1 + math.log(n)) * self.idf(w) for w, n in counts.items()}
        ranked = sorted(score, key=lambda w: (-score[w], w))  # ties broken by the word: deterministic
        return tuple(written[w] for w in ranked[:k])


def system_words(words: SalientWords, messages: tuple[dict, ...] | None, context: str, k: int) -> tuple[str, ...]:
    """The k most salient words of a chat's own system prompt, once the context holds all of it."""
    if not messages or messages[0]["role"] != "system" or messages[0]["content"] not in context:
        return ()
    return words.top(messages[0]["content"] + " ", k)
