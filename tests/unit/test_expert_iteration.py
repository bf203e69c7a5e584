"""benchmarks/expert_iteration.py keeps, per row, the explanation the AR reconstructs best."""

import argparse

import pytest
import torch
import yaml

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


@pytest.mark.slow  # trains four tiny adapters
def test_refit_ar_trains_the_nlas_ar_on_beside_the_expert_av_and_without_it_links_the_nlas(tmp_path, tiny_llama):
    from conftest import TOY_WORDS, write_toy_pairs
    from nla.autoencoder.meta import read_model_meta
    from nla.layout import sidecar_path
    from nla.train.ar import train_ar
    from nla.train.av import train_av
    from nla.train.config import ARTrainConfig, AVTrainConfig

    data = write_toy_pairs(tmp_path / "pairs.parquet", TOY_WORDS, rows=16, noise=0.3, template="about {word}")[0]
    sidecar_path(data).write_text(yaml.safe_dump({"kind": "nla_dataset", "extraction": {  # as explain-data writes
        "layer_index": 1, "base_model": str(tiny_llama), "d_model": 32}}))
    start = tmp_path / "start"
    common = dict(data=data, out=start, model=str(tiny_llama), layer=1, lora_rank=4, batch_size=8, epochs=0.5)
    train_av(AVTrainConfig(**common), progress=False)
    train_ar(ARTrainConfig(**common), progress=False)
    args = argparse.Namespace(nla=str(start), lr=1e-3, ar_lr=1e-3, batch_size=8, epochs=0.5)

    expert.train_folder(tmp_path / "refit", start, data, args, refit=True)
    expert.train_folder(tmp_path / "kept", start, data, args)
    refit, kept = tmp_path / "refit" / "ar_adapter", tmp_path / "kept" / "ar_adapter"
    assert not refit.is_symlink() and read_model_meta(refit).parent_checkpoints == [str(start)]
    assert kept.is_symlink() and kept.resolve() == (start / "ar_adapter").resolve()
    assert (tmp_path / "refit" / "av_adapter").is_dir() and (tmp_path / "kept" / "av_adapter").is_dir()
