"""benchmarks/audit_themes.py's measures: AUROC and precision@N can fail, the arms' visible text is identical
(so the black box is at chance by construction), and its random NLA draws a direction of the AR's norm."""

import numpy as np
import pytest
import torch

from conftest import load_benchmark

audit = load_benchmark("audit_themes")


def test_auroc_and_precision_span_from_failure_to_success():
    rng = np.random.default_rng(0)
    high, low = np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0])
    assert audit.auroc(high, low) == 1.0 and audit.auroc(low, high) == 0.0 and audit.auroc(low, low) == 0.5
    assert audit.precision_at_n(high, low, rng) == 1.0 and audit.precision_at_n(low, high, rng) == 0.0
    value, lo, hi = audit.with_interval(high, low, audit.auroc)
    assert value == lo == hi == 1.0
    noise = rng.normal(size=(2, 400))
    assert abs(audit.auroc(noise[0], noise[1]) - 0.5) < 0.06  # two draws of one distribution: chance


def test_every_arm_shows_the_same_visible_text_and_the_black_box_is_at_chance():
    corpus = audit.transcripts([f"Answer {i}." for i in range(len(audit.USER_TURNS))])
    arms = {d["source"] for d in corpus}
    assert arms == {"control", "placebo", *audit.ORGANISMS}
    visible = {}
    for doc in corpus:
        visible.setdefault(doc["genre"], set()).add(str([m for m in doc["messages"] if m["role"] != "system"]))
    assert all(len(texts) == 1 for texts in visible.values())
    for name, (_, _, query, _) in audit.ORGANISMS.items():
        scores = audit.black_box(corpus, query)
        assert audit.auroc(audit.arm_scores(scores, name), audit.arm_scores(scores, "control")) == 0.5


def test_a_document_search_did_not_return_ranks_below_all_others():
    scores = {"ocean-00": 2.0, "control-00": 1.0}
    assert audit.arm_scores(scores, "ocean")[1] < 1.0  # ocean-01 was not returned


def test_the_random_nla_keeps_the_ars_norm_and_ignores_the_query():
    class FakeNLA:
        def reconstruct(self, texts):
            return torch.full((len(texts), 8), 3.0)

    random = audit.RandomReconstruction(FakeNLA(), seed=1)
    out = random.reconstruct(["the ocean", "chess"])
    assert out.norm(dim=1).tolist() == pytest.approx([torch.full((8,), 3.0).norm().item()] * 2)
    assert not torch.allclose(out[0], torch.full((8,), 3.0))


def test_a_query_in_the_salient_form_names_its_content_words_as_the_format_does():
    assert audit.phrased("the ocean and the sea", "plain") == "the ocean and the sea"
    assert audit.phrased("the ocean and the sea", "salient") == 'Its system prompt mentions "ocean" and "sea".'
    assert audit.phrased("chess", "salient") == 'Its system prompt mentions "chess".'


def test_the_theme_share_is_the_planted_shift_over_the_token_variance():
    corpus = audit.transcripts([f"Answer {i}." for i in range(len(audit.USER_TURNS))])
    arms = [d["source"] for d in corpus]
    x = np.zeros((len(corpus), 2))
    x[[a == "ocean" for a in arms], 0] = 3.0  # ocean's transcripts shifted by 3 along the first axis
    share = audit.theme_share({20: x}, {20: 9.0}, corpus)
    assert share["ocean"][20] == 1.0 and share["chess"][20] == 0.0 and share["placebo"][20] == 0.0


class _FixedReconstruction:
    def __init__(self, direction):
        self.direction = torch.tensor([direction], dtype=torch.float32)

    def reconstruct(self, texts):
        return self.direction.repeat(len(texts), 1)


def test_the_transcript_direction_finds_a_shift_along_the_ars_direction_and_only_that():
    corpus = audit.transcripts([f"Answer {i}." for i in range(len(audit.USER_TURNS))])
    rng = np.random.default_rng(0)
    means = rng.normal(size=(len(corpus), 3)) * [0.1, 0.1, 1.0]
    means[[d["source"] == "ocean" for d in corpus]] += [1.0, 0.0, 0.0]  # the theme shifts the first axis
    along = audit.transcript_direction(_FixedReconstruction([1.0, 0.0, 0.0]), "the ocean", means, corpus)
    across = audit.transcript_direction(_FixedReconstruction([0.0, 1.0, 0.0]), "the ocean", means, corpus)
    assert audit.compare(along, "ocean")["auroc"][0] == 1.0
    assert audit.compare(along, "placebo")["auroc"][0] < 0.8 and 0.2 < audit.compare(across, "ocean")["auroc"][0] < 0.8


def test_against_the_other_planted_arms_a_shared_hidden_interest_shift_does_not_count():
    corpus = audit.transcripts([f"Answer {i}." for i in range(len(audit.USER_TURNS))])
    rng = np.random.default_rng(0)
    arms = np.array([d["source"] for d in corpus])
    means = rng.normal(size=(len(corpus), 3)) * 0.1
    means[np.isin(arms, list(audit.ORGANISMS))] += [1.0, 0.0, 0.0]  # every planted arm: one shared shift
    means[arms == "ocean"] += [0.0, 1.0, 0.0]  # and the ocean's own
    shared = audit.transcript_direction(_FixedReconstruction([1.0, 0.0, 0.0]), "q", means, corpus)
    own = audit.transcript_direction(_FixedReconstruction([0.0, 1.0, 0.0]), "q", means, corpus)
    assert audit.compare(shared, "ocean")["auroc"][0] == 1.0
    assert audit.compare_other_planted(shared, "ocean")["auroc"][0] < 0.8  # not found: no better than the rest
    assert audit.compare_other_planted(own, "ocean")["auroc"] == [1.0, 1.0, 1.0]
