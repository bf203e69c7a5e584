"""Explain every token of a text: the target's activation at layer K, the AV's explanation, and its fidelity.

    nla explain "The capital of France is" --nla runs/nla

Fidelity is the AR's reconstruction error of the activation from the explanation,
2(1 - cos): 0 is perfect, 2 is unrelated. Early positions and rare high-norm tokens
(BOS, chat markers) are known to decode poorly; the score says so rather than hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nla.autoencoder.nla import NLA
from nla.errors import NLAError
from nla.models.target import Target


@dataclass
class TokenReading:
    position: int
    token: str
    explanation: str | None  # None: the AV wrote no complete <explanation> tags
    score: float | None  # 2(1 - cos) of the AR's reconstruction; None when there is no explanation


def explain_text(nla: NLA, text: str, *, target: Target | None = None, min_position: int = 0,
                 max_new_tokens: int = 100, batch_size: int = 16) -> list[TokenReading]:
    """One reading per token at or after min_position. The target defaults to the NLA's own (its shared base)."""
    target = target or nla.target()
    ids = target.encode(text)
    if len(ids) <= min_position:
        raise NLAError(f"the text has {len(ids)} tokens, none at or after --min-position {min_position}")
    positions = list(range(min_position, len(ids)))
    vectors = nla.activations(ids, target)[positions]  # (P, d)
    explanations = nla.explain(vectors, max_new_tokens=max_new_tokens, batch_size=batch_size)
    scores = nla.score(vectors, [e.text for e in explanations])
    return [TokenReading(p, target.tokenizer.decode([ids[p]]), e.text, s)
            for p, e, s in zip(positions, explanations, scores)]


def format_readings(readings: list[TokenReading]) -> str:
    lines = []
    for r in readings:
        score = "  failed" if r.score is None else f"{r.score:8.3f}"
        explanation = (r.explanation or "(no explanation tags)").replace("\n", " ")
        lines.append(f"{r.position:4d} {r.token!r:>14} {score}  {explanation}")
    return "   # token              2(1-cos)  explanation\n" + "\n".join(lines)
