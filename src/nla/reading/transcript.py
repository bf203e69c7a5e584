"""Explain every token of a text: the target's activation at layer K, the AV's explanation, and its fidelity.

    nla explain "The capital of France is" --nla runs/nla

Fidelity is the AR's reconstruction error of the activation from the explanation,
2(1 - cos): 0 is perfect, 2 is unrelated. Early positions and rare high-norm tokens
(BOS, chat markers) are known to decode poorly; the score says so rather than hiding it.

Every token costs one AV generation (up to --max-new-tokens), so a long text takes long:
a text past the target's context, or past --max-tokens, is refused before the model runs,
with its length and the limit; a text of several batches shows progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm

from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.autoencoder.nla import NLA
from nla.errors import NLAError
from nla.models.target import Target


@dataclass
class TokenReading:
    position: int
    token: str
    explanation: str | None  # None: the AV wrote no complete <explanation> tags
    score: float | None  # 2(1 - cos) of the AR's reconstruction; None when there is no explanation
    truncated: bool = False  # the AV reached max_new_tokens before its closing tag (not scored)


def check_length(target: Target, tokens: int, *, max_tokens: int | None = None, what: str = "the text") -> None:
    """Refuse a token sequence longer than the target's context (its activations there mean nothing) or than
    max_tokens (--max-tokens), naming its length and the limit."""
    context = target.context_length
    if context is not None and tokens > context:
        raise NLAError(f"{what} has {tokens} tokens, more than the {context} of {target.name}'s context; "
                       "shorten it")
    if max_tokens is not None and tokens > max_tokens:
        raise NLAError(f"{what} has {tokens} tokens, more than --max-tokens {max_tokens} (each token is one "
                       "explanation to write); shorten it, or raise --max-tokens")


def explain_text(nla: NLA, text: str, *, target: Target | None = None, min_position: int = 0,
                 max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = 0.0, batch_size: int = 16,
                 max_tokens: int | None = None, progress: bool = False) -> list[TokenReading]:
    """One reading per token at or after min_position. The target defaults to the NLA's own (its shared base).
    A text past the target's context or max_tokens is refused; `progress` shows a bar past one batch."""
    target = target or nla.target()
    ids = target.encode(text)
    check_length(target, len(ids), max_tokens=max_tokens)
    if len(ids) <= min_position:
        raise NLAError(f"the text has {len(ids)} tokens, none at or after --min-position {min_position}")
    positions = list(range(min_position, len(ids)))
    vectors = nla.activations(ids, target)[positions]  # (P, d)
    explanations = []
    bar = tqdm(total=len(positions), desc="explain", unit="token", disable=not progress or len(positions) <= batch_size)
    for start in range(0, len(positions), batch_size):
        batch = vectors[start : start + batch_size]
        explanations += nla.explain(batch, max_new_tokens=max_new_tokens, temperature=temperature,
                                    batch_size=batch_size)
        bar.update(len(batch))
    bar.close()
    scores = nla.mse(vectors, [e.text for e in explanations])
    return [TokenReading(p, target.token_text(ids[p]), e.text, s, e.truncated)
            for p, e, s in zip(positions, explanations, scores)]


def format_readings(readings: list[TokenReading], calibration=None) -> str:
    """One line per token. With the NLA's calibration (nla calibrate) the score is 1 - MSE/B with its
    High / Medium / Low label, as in nla trace; without one it is the raw 2(1 - cos)."""
    lines = []
    for r in readings:
        if r.truncated or r.score is None:
            score = "truncated" if r.truncated else "failed"
        elif calibration is None:
            score = f"{r.score:.3f}"
        else:
            value = calibration.score(r.score)
            score = f"{value:+.2f} {calibration.label(value) or ''}".rstrip()
        missing = ("(cut off at the token cap before </explanation>; raise --max-new-tokens)" if r.truncated
                   else "(no explanation tags)")
        explanation = (r.explanation or missing).replace("\n", " ")
        lines.append(f"{r.position:4d} {r.token!r:>14} {score:>12}  {explanation}")
    truncated = sum(r.truncated for r in readings)
    notes = [f"{truncated} of {len(readings)} explanations were truncated (not scored)"] if truncated else []
    notes.append(calibration.note if calibration is not None else
                 "score = 2(1 - cos) of the AR's reconstruction: 0 is perfect, 2 unrelated; nla calibrate --nla "
                 "FOLDER gives a 1 - MSE/B score with labels")
    header = "   # token                   " + ("score" if calibration is not None else "2(1-cos)")
    return "\n".join([header, *lines, *notes])
