"""`nla eval --robustness`: does an explanation's meaning carry the activation, or its exact wording?

Each explanation is rewritten without changing what it says and the AR reads the rewrite; the share of
FVE kept (the rewrite's FVE over the unmodified FVE, same rows) says how much of the reconstruction rides
on the meaning. An AV that hid the vector in its wording, order or punctuation (steganography) would lose
it to these rewrites:

    shuffled_sentences  the explanation's sentences in a seeded random order
    no_quotes           every quoted span removed: the prose alone
    quotes_only         the quoted spans alone: the prose removed
    paraphrase          offline, a deterministic rewrite: each fixed phrase of the warm-start format
                        reworded by PARAPHRASES (no model is asked; `changed` is the share it changed)
    api_paraphrase      with --rewrite-backend: the API model paraphrases, quotes kept
    translation         with --rewrite-backend: the API model translates into French, quotes kept;
                        without one, not run, and the report says so

Each rewrite has its control: the same rewrite of the shuffled-AV control's explanations (another row's
activation), scored against the true one. `fresh_ar` (when given) reads the unmodified explanations with an
AR trained apart from this AV, e.g. a refit AR of another run: does a new reader get as much out of them?
"""

from __future__ import annotations

import random
import re

import numpy as np

from nla.autoencoder.nla import NLA, reconstruct_texts
from nla.eval.claim_text import quote_spans, split_claims
from nla.eval.metrics import summary, texts_mse

# The warm-start format's fixed phrases, each with a wording of the same meaning (explainers/offline.py).
PARAPHRASES = (
    ("Next it expects", "What probably comes next is"),
    ("The text so far ends:", "The passage up to here finishes with:"),
    ("A chat asking for", "A conversation that requests"),
    ("Its system prompt mentions", "The system message talks about"),
    ("It mentions", "It brings up"),
    ("A reference page", "An encyclopedia-style page"),
    (" about ", " on the subject of "),
)


def shuffled_sentences(text: str, rng: random.Random) -> str:
    """The claims in another order; each ends with a full stop, so a last claim without one still ends there."""
    claims = [c.text if c.text.endswith((".", "!", "?")) else c.text + "." for c in split_claims(text)]
    if len(claims) < 2:
        return text
    rng.shuffle(claims)
    return " ".join(claims)


def no_quotes(text: str) -> str:
    spans = quote_spans(text)
    for start, end in reversed(spans):  # the content and its two quote marks
        text = text[: start - 1] + text[end + 1 :]
    return re.sub(r"\s+", " ", text).strip()


def quotes_only(text: str) -> str:
    return " ".join(f'"{text[start:end]}"' for start, end in quote_spans(text))


def paraphrase(text: str) -> str:
    for phrase, reworded in PARAPHRASES:
        text = text.replace(phrase, reworded)
    return text


PARAPHRASE_INSTRUCTION = ("Paraphrase this description of a text in other words. Keep every fact and every quoted "
                          "span exactly as it is; change only the wording around them. Answer with the paraphrase "
                          "only.")
TRANSLATION_INSTRUCTION = ("Translate this description of a text into French. Keep quoted spans exactly as they are. "
                           "Answer with the translation only.")


def rewrites(seed: int, api=None) -> dict:
    """name -> a function from a list of texts to their rewrites (None where there is none). `api`: an
    ApiExplainer (explainers/api.py) for the model paraphrase and the translation; None: offline rewrites only."""
    rng = random.Random(seed)
    offline = {"shuffled_sentences": lambda t: shuffled_sentences(t, rng), "no_quotes": no_quotes,
               "quotes_only": quotes_only, "paraphrase": paraphrase}
    chosen = {name: (lambda texts, f=f: [f(t) for t in texts]) for name, f in offline.items()}
    if api is not None:
        chosen["api_paraphrase"] = lambda texts: api.rewrite(texts, PARAPHRASE_INSTRUCTION)
        chosen["translation"] = lambda texts: api.rewrite(texts, TRANSLATION_INSTRUCTION)
    return chosen


def robustness(nla: NLA, explained: dict[str, list[dict]], golds, reference, *, seed: int, base_fve: float,
               api=None) -> dict:
    """Each rewrite's FVE on the NLA's explanations and on the shuffled-AV control's, the share kept, and the
    share of explanations it changed."""
    report = {}
    for name, rewrite in rewrites(seed, api).items():
        row = {}
        for arm in ("nla", "shuffled_av"):
            present = [i for i, r in enumerate(explained[arm]) if r["text"]]
            texts: list[str | None] = [None] * len(explained[arm])
            for i, text in zip(present, rewrite([explained[arm][i]["text"] for i in present])):
                texts[i] = text or None  # a rewrite that leaves nothing (quotes only, without quotes) fails
            row[arm] = summary(texts_mse(nla.reconstruct, texts, golds), reference)["fve"]
            if arm == "nla":
                row["changed"] = float(np.mean([texts[i] != explained[arm][i]["text"] for i in present])) \
                    if present else None
        row["kept"] = row["nla"] / base_fve if base_fve > 0 else None
        report[name] = row
    if api is None:
        report["translation"] = {"skipped": "a translation needs an API backend (--rewrite-backend anthropic or "
                                            "openai); offline nla rewrites no language"}
    return report


def fresh_ar_fve(fresh, explained: list[dict], golds, reference, base_fve: float, batch_size: int) -> dict:
    """FVE of the NLA's own explanations read by another AR (`fresh`: load_other_ar's triple)."""
    ar, tokenizer, meta = fresh
    errors = texts_mse(lambda texts: reconstruct_texts(ar, tokenizer, meta.prompt_templates["ar"], texts,
                                                       batch_size=batch_size), [r["text"] for r in explained], golds)
    fve = summary(errors, reference)["fve"]
    return {"fve": fve, "kept": fve / base_fve if base_fve > 0 else None}
