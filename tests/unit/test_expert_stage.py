"""The expert stage: rounds in which the AV trains on the sampled explanations its NLA's AR reads best."""

import json

import pyarrow.parquet as pq
import pytest
import torch

from conftest import build_sft_nla
from nla.autoencoder.meta import read_model_meta
from nla.autoencoder.nla import NLA
from nla.errors import NLAError
from nla.inputs import vectors_of
from nla.train.config import ExpertConfig
from nla.train.expert import DONE_FILE, PAIRS_FILE, best_of, expert_iteration


class _ScoredByLength:
    """An NLA whose AR error is a text's length / 10 (None for a failed answer)."""

    def mse(self, vectors, texts):
        return [None if t is None else len(t) / 10 for t in texts]


def test_the_best_candidate_is_kept_failed_ones_never_and_rows_with_none_dropped():
    drafts = [["greedy!", "ok", None], [None, None, None], ["a", "long one", "mid"]]
    chosen, stats = best_of(_ScoredByLength(), torch.zeros(3, 2), drafts)
    assert chosen == ["ok", None, "a"]
    assert stats["greedy_best"] == 0.5 and stats["kept"] == 2
    assert stats["chosen_mse"] < stats["greedy_mse"]  # (0.2 + 0.1) / 2 against (0.7 + 0.1) / 2


def test_with_contexts_a_candidate_inventing_a_quote_is_passed_over_where_the_row_has_a_grounded_one():
    drafts = [['says "xyz"', 'says "abc" here ok', None], ['"qq" x', '"qqq"', None]]
    contexts = ["so the ABC  here", "nothing quoted"]
    assert best_of(_ScoredByLength(), torch.zeros(2, 2), drafts)[0] == ['says "xyz"', '"qqq"']  # the shortest
    chosen, stats = best_of(_ScoredByLength(), torch.zeros(2, 2), drafts, contexts)
    assert chosen == ['says "abc" here ok', '"qqq"']  # row 2: every candidate invents, so the AR decides
    assert stats["greedy_invented"] == 1.0 and stats["chosen_invented"] == 0.5
    assert stats["chosen_mse"] == (1.8 + 0.5) / 2  # the errors of what was chosen, not of the AR's favourites


def test_an_av_that_never_closes_its_tag_is_one_line():
    with pytest.raises(NLAError, match="closed its explanation in 0 of 2 rows"):
        best_of(_ScoredByLength(), torch.zeros(2, 2), [[None, None], [None, None]])


def test_bad_settings_and_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(NLAError, match="rounds, rows, samples"):
        ExpertConfig(nla=tmp_path, data=tmp_path / "x.parquet", out=tmp_path / "o", rows=0)
    (tmp_path / "nla" / "av").mkdir(parents=True)  # a fully trained AV: nothing to train on as LoRA
    with pytest.raises(NLAError, match="no av_adapter/ .*train with LoRA, or drop the expert stage"):
        expert_iteration(ExpertConfig(nla=tmp_path / "nla", data=tmp_path / "x.parquet", out=tmp_path / "o"))


@pytest.fixture(scope="module")
def iterated(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("expert")
    start, pairs = build_sft_nla(root, tiny_llama, av_rank=8)
    # The tiny model's logits are nearly flat (its frozen tied embeddings are small), so a LoRA AV's samples
    # at temperature 1 are noise; at 0.05 about a third close their tag (measured on 32 rows).
    cfg = ExpertConfig(nla=start, data=pairs, out=root / "expert", rounds=2, rows=16, samples=2, lr=1e-3,
                       batch_size=8, epochs=1.0, max_new_tokens=26, temperature=0.05, device="cpu")
    return cfg, expert_iteration(cfg, progress=False)


@pytest.mark.slow  # trains a tiny NLA and two rounds
def test_each_round_trains_on_from_the_last_on_fresh_rows_and_out_is_a_complete_nla(iterated):
    cfg, summary = iterated
    first, second = cfg.out / "round-1", cfg.out / "round-2"
    assert read_model_meta(first / "av_adapter").parent_checkpoints == [str(cfg.nla)]
    assert read_model_meta(second / "av_adapter").parent_checkpoints == [str(first)]
    rows = [{tuple(v) for v in vectors_of(pq.read_table(f / PAIRS_FILE)).round(5).tolist()} for f in (first, second)]
    assert rows[0] and rows[1] and not rows[0] & rows[1]  # each round drew rows the other did not
    assert [r["rows"] for r in summary["rounds"]] == [16, 16]
    assert all(r["chosen_mse"] <= r["greedy_mse"] for r in summary["rounds"])

    final, start = NLA.load(cfg.out, device="cpu"), NLA.load(cfg.nla, device="cpu")
    vectors = torch.from_numpy(vectors_of(pq.read_table(cfg.data)).copy())[:4]
    assert torch.equal(final.reconstruct(["about river"]), start.reconstruct(["about river"]))  # the AR, kept
    assert (cfg.out / "av_adapter" / "adapter_model.safetensors").read_bytes() == \
        (second / "av_adapter" / "adapter_model.safetensors").read_bytes()
    assert len(final.explain(vectors, max_new_tokens=26)) == 4


@pytest.mark.slow
def test_the_chosen_text_is_each_rows_candidate_the_ar_reads_best(iterated):
    cfg, _ = iterated
    folder = cfg.out / "round-1"
    logs = [json.loads(line) for name in ("greedy.jsonl", "samples.jsonl")
            for line in (folder / name).read_text().splitlines()[1:]]
    by_row = [[r["text"] for r in logs if r["row"] == i] for i in range(cfg.rows)]
    assert all(len(texts) == 1 + cfg.samples for texts in by_row)
    kept = [texts for texts in by_row if any(t is not None for t in texts)]
    pairs = pq.read_table(folder / PAIRS_FILE)
    assert pairs.num_rows == len(kept)
    start = NLA.load(cfg.nla, device="cpu")
    vectors = torch.from_numpy(vectors_of(pairs).copy())
    for vector, texts, chosen in zip(vectors, kept, pairs.column("explanation").to_pylist()):
        errors = {t: start.mse(vector[None], [t])[0] for t in texts if t is not None}
        assert errors[chosen] <= min(errors.values()) + 1e-6


@pytest.mark.slow
def test_a_finished_stage_is_refused_and_a_kill_before_the_marker_resumes_without_training(iterated):
    cfg, summary = iterated
    with pytest.raises(NLAError, match="already holds an expert-iterated NLA"):
        expert_iteration(cfg, progress=False)
    (cfg.out / DONE_FILE).unlink()  # killed after the last copy, before the marker
    trained = (cfg.out / "round-2" / "av_metrics.jsonl").read_text()
    assert expert_iteration(cfg, progress=False)["rounds"] == summary["rounds"]
    assert (cfg.out / "round-2" / "av_metrics.jsonl").read_text() == trained
