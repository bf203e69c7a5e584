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

from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.autoencoder.nla import NLA
from nla.errors import NLAError
from nla.models.target import Target
from nla.reading.config import TraceSettings
from nla.reading.prompt import check_length, token_positions
from nla.reading.trace import Reader


@dataclass
class TokenReading:
    position: int
    token: str
    explanation: str | None  # None: the AV wrote no complete <explanation> tags
    mse: float | None  # 2(1 - cos) of the AR's reconstruction; None when there is no explanation
    truncated: bool = False  # the AV reached max_new_tokens before its closing tag (not scored)


def explain_text(nla: NLA, text: str, *, target: Target | None = None, min_position: int = 0,
                 max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = 0.0, batch_size: int = 16,
                 max_tokens: int | None = None, progress: bool = False,
                 positions: list[int] | None = None) -> list[TokenReading]:
    """One reading per token at or after min_position, through the one reading path (Reader.read) without
    claim checks. The target defaults to the NLA's own (its shared base). A text past the target's context or
    max_tokens is refused; `progress` shows a bar."""
    target = target or nla.target()
    ids = target.encode(text)
    check_length(target, len(ids), max_tokens=max_tokens)
    if len(ids) <= min_position:
        raise NLAError(f"the text has {len(ids)} tokens, none at or after --min-position {min_position}")
    settings = TraceSettings(max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature,
                             claims=False)
    wanted = range(min_position, len(ids)) if positions is None else sorted(set(token_positions(positions, len(ids))))
    readings = Reader(nla, target, None, "").read(ids, list(wanted), settings, progress=progress, desc="explain")
    return [TokenReading(p, target.token_text(ids[p]), r["explanation"], r["mse"], r["truncated"])
            for p, r in sorted(readings.items())]


def format_readings(readings: list[TokenReading], calibration=None) -> str:
    """One line per token. With the NLA's calibration (nla calibrate) the score is 1 - MSE/B with its
    High / Medium / Low label, as in nla trace; without one it is the raw 2(1 - cos)."""
    lines = []
    for r in readings:
        if r.truncated or r.mse is None:
            score = "truncated" if r.truncated else "failed"
        elif calibration is None:
            score = f"{r.mse:.3f}"
        else:
            value = calibration.score(r.mse)
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
