"""benchmarks/expert_iteration.py: its arms' folders (the choice itself is tested with the expert stage)."""

import argparse

import pytest
import yaml

from conftest import load_benchmark

expert = load_benchmark("expert_iteration")


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
