"""The explainer interface: a request describes one activation's context; an explainer writes its explanation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ExplainRequest:
    row_id: str  # stable id of the activation (doc id and position): keys caching and variation
    context: str  # decoded text up to and including the token
    token: str  # the final token
    source: str = ""
    genre: str = ""
    topic: str = ""
    next_tokens: tuple[tuple[str, float], ...] = field(default_factory=tuple)  # the target's top predictions
    quote: str | None = None  # the last few tokens of the context, decoded exactly (quote_tokens of them)
    salient: tuple[str, ...] = ()  # the context's most distinctive content words (explainers/salient.py)
    system_words: tuple[str, ...] = ()  # those of the chat's own system prompt, when it has one


class Explainer(Protocol):
    name: str

    def explain(self, requests: list[ExplainRequest]) -> list[str | None]:
        """One explanation per request (None where the backend failed for that request)."""
        ...
