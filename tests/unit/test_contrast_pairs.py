"""benchmarks/contrast_pairs.py: its themes stay disjoint from the benchmark's, its pairs load as train-ar data,
and its held-out and audit readings score what they say."""

import numpy as np
import torch

from conftest import load_benchmark
from nla.explainers.salient import content_words
from nla.train.pairs import read_pairs

contrast = load_benchmark("contrast_pairs")
audit = load_benchmark("audit_themes")


def test_themes_are_salient_sentences_disjoint_from_the_benchmarks_and_one_in_four_held_out():
    catalogue = contrast.themes()
    assert catalogue[0]["text"] == 'Its system prompt mentions "trains", "railways", "steam" and "engines".'
    benchmark_words = {w for o in audit.ORGANISMS.values() for q in o[2:] for w in content_words(q)}
    assert not {w for t in catalogue for w in content_words(t["filler"])} & benchmark_words
    for kind in ("topic", "taboo", "trait"):
        of_kind = [t for t in catalogue if t["kind"] == kind]
        assert sum(t["held_out"] for t in of_kind) == len(of_kind) // 4


def test_training_pairs_are_read_by_train_ars_own_reader(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = contrast.write_training_pairs(tmp_path / "pairs.parquet", ["a", "b", "c"], vectors, layer=9)
    texts, golds, data = read_pairs(path)
    assert texts == ["a", "b", "c"] and data.layer == 9 and data.model == contrast.MODEL
    np.testing.assert_array_equal(golds.numpy(), vectors)


def test_held_out_report_separates_an_ar_that_reads_its_theme_from_shuffled_texts():
    catalogue = [{"text": "x"}, {"text": "y"}, {"text": "z"}]
    axes = {"x": [1.0, 0, 0], "y": [0, 1.0, 0], "z": [0, 0, 1.0]}
    pairs = {"theme": np.array([0, 0, 1, 1, 2, 2]),
             "vector": np.array([axes["xyz"[t]] for t in [0, 0, 1, 1, 2, 2]], dtype=np.float32) + 0.1}

    def read(texts):
        return torch.tensor([axes[t] for t in texts])

    report = contrast.held_out_report(read, catalogue, pairs, train_mean=np.ones(3, dtype=np.float32))
    assert report["own_theme_closer"] == 1.0 and report["theme_cosine"] > report["theme_cosine_other_themes"]
    assert report["pair_cosine"] > max(report["pair_cosine_shuffled"], report["pair_cosine_mean_contrast"])


def test_audit_table_finds_a_planted_arms_direction_and_not_the_placebo():
    rng = np.random.default_rng(0)
    arms = ["control", "placebo", *audit.ORGANISMS]
    corpus = audit.transcripts([f"Answer {i}." for i in range(len(audit.USER_TURNS))])
    axes = {name: np.eye(len(arms))[i] for i, name in enumerate(arms)}
    means = np.stack([axes[d["source"]] * 3 + rng.normal(0, 0.3, len(arms)) for d in corpus])
    directions = {name: axes[name] for name in audit.ORGANISMS}
    unrelated = {name: rng.normal(0, 1, len(arms)) for name in audit.ORGANISMS}
    table = contrast.audit_table(directions, unrelated, means, corpus)
    for row in table.values():
        assert row["planted_vs_control"][0] == 1.0 and row["planted_vs_other_planted"][0] == 1.0
        assert 0.2 < row["placebo_vs_control"][0] < 0.8
