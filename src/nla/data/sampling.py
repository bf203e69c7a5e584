"""Which token positions of a document become activations, and which split a document is in.

Both are keyed on sha256(seed | doc_id), so a document gets the same positions and
the same split whatever order or shard it is processed in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from nla.errors import NLAError


def _key(seed: int, *parts: str) -> int:
    digest = hashlib.sha256("|".join([str(seed), *parts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def eligible_positions(token_ids: list[int], *, special_ids: frozenset[int], min_position: int) -> list[int]:
    """Positions >= min_position whose token is not special: the ones an activation may be taken from."""
    return [i for i in range(min_position, len(token_ids)) if token_ids[i] not in special_ids]


def sample_positions(
    token_ids: list[int], doc_id: str, *, special_ids: frozenset[int], min_position: int, per_doc: int, seed: int
) -> list[int]:
    """Up to `per_doc` distinct positions >= min_position whose token is not special, sorted."""
    eligible = eligible_positions(token_ids, special_ids=special_ids, min_position=min_position)
    if len(eligible) <= per_doc:
        return eligible
    rng = np.random.default_rng(_key(seed, doc_id))
    return sorted(int(i) for i in rng.choice(eligible, size=per_doc, replace=False))


@dataclass(frozen=True)
class SplitFractions:
    """Document-level split. `validation` and `test` are fractions of all documents;
    the rest is training, divided between AR-SFT, AV-SFT and RL by the three weights
    (released configs: 25% / 25% / 50%)."""

    validation: float = 0.05
    test: float = 0.05
    ar_sft: float = 0.25
    av_sft: float = 0.25
    rl: float = 0.50

    def __post_init__(self):
        values = [self.validation, self.test, self.ar_sft, self.av_sft, self.rl]
        if any(v < 0 for v in values) or self.validation + self.test >= 1:
            raise NLAError("split fractions must be >= 0 and validation + test must stay below 1")
        if self.ar_sft + self.av_sft + self.rl <= 0:
            raise NLAError("at least one of the ar_sft / av_sft / rl weights must be positive")

    def boundaries(self) -> list[tuple[str, float]]:
        """(split name, upper edge) in [0, 1], checked in order."""
        train = 1.0 - self.validation - self.test
        weight = self.ar_sft + self.av_sft + self.rl
        edges, edge = [], 0.0
        for name, share in [("validation", self.validation), ("test", self.test),
                            ("ar_sft", train * self.ar_sft / weight), ("av_sft", train * self.av_sft / weight),
                            ("rl", train * self.rl / weight)]:
            edge += share
            edges.append((name, edge))
        return edges


SPLITS = ("ar_sft", "av_sft", "rl", "validation", "test")


def assign_split(doc_id: str, seed: int, fractions: SplitFractions) -> str:
    u = _key(seed, "split", doc_id) / 2**64
    for name, edge in fractions.boundaries():
        if u < edge:
            return name
    return "rl"  # u sits within float rounding of 1.0
