"""benchmarks/expert_iteration.py keeps, per row, the explanation the AR reconstructs best."""

import torch

from conftest import load_benchmark

expert = load_benchmark("expert_iteration")


class _ScoredByLength:
    """An NLA whose AR error is a text's length / 10 (None for a failed answer)."""

    def mse(self, vectors, texts):
        return [None if t is None else len(t) / 10 for t in texts]


def test_the_best_candidate_is_kept_failed_ones_never_and_rows_with_none_dropped():
    drafts = [["greedy!", "ok", None], [None, None, None], ["a", "long one", "mid"]]
    keep, chosen, stats = expert.best_of(_ScoredByLength(), torch.zeros(3, 2), drafts)
    assert keep == [0, 2] and chosen == ["ok", "a"]
    assert stats["greedy_best"] == 0.5 and stats["kept"] == 2
    assert stats["chosen_mse"] < stats["greedy_mse"]  # (0.2 + 0.1) / 2 against (0.7 + 0.1) / 2
