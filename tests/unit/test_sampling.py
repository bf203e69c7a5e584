from collections import Counter

import pytest

from nla.data.sampling import SPLITS, SplitFractions, assign_split, sample_positions
from nla.errors import NLAError

SPECIAL = frozenset({0, 1})


def test_positions_are_reproducible_sorted_and_eligible():
    ids = [1] + [5, 0, 7, 8, 9] * 20
    first = sample_positions(ids, "doc-a", special_ids=SPECIAL, min_position=10, per_doc=8, seed=42)
    again = sample_positions(ids, "doc-a", special_ids=SPECIAL, min_position=10, per_doc=8, seed=42)
    assert first == again
    assert first == sorted(set(first)) and len(first) == 8
    assert all(p >= 10 and ids[p] not in SPECIAL for p in first)


def test_positions_depend_on_doc_id_and_seed_only():
    ids = list(range(2, 200))
    a = sample_positions(ids, "doc-a", special_ids=SPECIAL, min_position=5, per_doc=6, seed=42)
    assert a != sample_positions(ids, "doc-b", special_ids=SPECIAL, min_position=5, per_doc=6, seed=42)
    assert a != sample_positions(ids, "doc-a", special_ids=SPECIAL, min_position=5, per_doc=6, seed=7)


def test_short_document_gives_all_eligible_positions_or_none():
    ids = [1, 5, 6, 0, 7]
    assert sample_positions(ids, "d", special_ids=SPECIAL, min_position=1, per_doc=8, seed=1) == [1, 2, 4]
    assert sample_positions(ids, "d", special_ids=SPECIAL, min_position=5, per_doc=8, seed=1) == []


def test_splits_are_deterministic_and_near_their_fractions():
    fractions = SplitFractions(validation=0.1, test=0.1, ar_sft=0.25, av_sft=0.25, rl=0.5)
    ids = [f"doc-{i}" for i in range(20000)]
    counts = Counter(assign_split(d, 42, fractions) for d in ids)
    assert set(counts) == set(SPLITS)
    expected = {"validation": 0.1, "test": 0.1, "ar_sft": 0.2, "av_sft": 0.2, "rl": 0.4}
    for name, share in expected.items():
        assert abs(counts[name] / len(ids) - share) < 0.015, name
    assert [assign_split(d, 42, fractions) for d in ids[:50]] == [assign_split(d, 42, fractions) for d in ids[:50]]


def test_zero_fraction_split_gets_no_documents():
    fractions = SplitFractions(validation=0.0, test=0.0, ar_sft=1, av_sft=0, rl=0)
    assert {assign_split(f"d{i}", 1, fractions) for i in range(500)} == {"ar_sft"}


@pytest.mark.parametrize("kwargs", [dict(validation=-0.1), dict(validation=0.6, test=0.5), dict(ar_sft=0, av_sft=0, rl=0)])
def test_bad_fractions_are_rejected(kwargs):
    with pytest.raises(NLAError):
        SplitFractions(**kwargs)
