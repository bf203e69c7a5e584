"""An AV with a soft-token projector: it trains, is stored beside its adapter, and loads every way an AV loads."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_toy_pairs
from nla.autoencoder.injection import Injection
from nla.autoencoder.nla import NLA
from nla.autoencoder.shared import export_nla, load_av_folder, store_at_rank
from nla.autoencoder.soft_tokens import projector_of
from nla.errors import NLAError
from nla.train.ar import train_ar
from nla.train.av import train_av
from nla.train.config import ARTrainConfig, AVTrainConfig

LAYER = 1


@pytest.fixture(scope="module")
def soft_run(tmp_path_factory, tiny_llama):
    folder = tmp_path_factory.mktemp("soft")
    data = write_toy_pairs(folder / "pairs.parquet", ["river", "bread"], rows=32, noise=0.3,
                           template="about {word}")[0]
    out = folder / "nla"
    train_av(AVTrainConfig(data=data, out=out, model=str(tiny_llama), layer=LAYER, lora_rank=4, batch_size=16,
                           epochs=1, lr=1e-2, injection="residual", injection_soft_tokens=2), progress=False)
    train_ar(ARTrainConfig(data=data, out=out, model=str(tiny_llama), layer=LAYER, lora_rank=4, batch_size=16,
                           epochs=0.5), progress=False)
    return out


def answers(nla, vectors) -> list[str]:
    return [e.answer for e in nla.explain(vectors, max_new_tokens=6)]


def test_the_projector_trains_and_is_stored_beside_the_adapter(soft_run):
    stored = load_file(soft_run / "av_adapter" / "soft_tokens.safetensors")
    assert stored["out.weight"].abs().sum() > 0  # it starts at zero: SFT moved it
    assert "soft_tokens: 2" in (soft_run / "av_adapter" / "nla_meta.yaml").read_text()
    av, _ = load_av_folder(soft_run / "av_adapter")
    assert av.injection == Injection("residual", LAYER, soft_tokens=2)
    assert torch.equal(projector_of(av.model).out.weight, stored["out.weight"])
    assert not any(p.requires_grad for p in projector_of(av.model).parameters())  # frozen once loaded


def test_shared_merged_and_released_read_the_same(soft_run, tmp_path):
    torch.manual_seed(3)
    vectors = torch.randn(3, 32)
    shared = answers(NLA.load(soft_run), vectors)
    assert shared == answers(NLA.load(soft_run, shared_base=False), vectors)
    export_nla(soft_run, tmp_path)
    weights = load_file(tmp_path / "av" / "model.safetensors")
    assert not any(k.startswith("nla_soft_tokens") for k in weights)  # the HF folder holds the model's own
    assert (tmp_path / "av" / "soft_tokens.safetensors").exists()
    av, _ = load_av_folder(tmp_path / "av")
    assert [e.answer for e in av.explain(vectors, max_new_tokens=6)] == shared


def test_a_cut_adapter_keeps_the_projector(soft_run, tmp_path):
    store_at_rank(soft_run / "av_adapter", tmp_path / "av_adapter", 2)
    av, _ = load_av_folder(tmp_path / "av_adapter")
    assert projector_of(av.model).out.weight.abs().sum() > 0


def test_a_missing_projector_file_is_named(soft_run, tmp_path):
    import shutil

    shutil.copytree(soft_run / "av_adapter", tmp_path / "av_adapter")
    (tmp_path / "av_adapter" / "soft_tokens.safetensors").unlink()
    with pytest.raises(NLAError, match="soft_tokens.safetensors is missing"):
        load_av_folder(tmp_path / "av_adapter")


@pytest.mark.slow  # RL steps
def test_rl_keeps_the_projector_frozen_and_stored_in_its_stacked_adapter(soft_run, tmp_path):
    from nla.rl.config import RLConfig
    from nla.rl.run import rl

    rl(RLConfig(nla=soft_run, data=soft_run.parent / "pairs.parquet", out=tmp_path / "rl", steps=1, batch_size=2,
                group_size=2, max_response_tokens=12, lora_rank=4, ar_lora_rank=4, device="cpu"), progress=False)
    before = load_file(soft_run / "av_adapter" / "soft_tokens.safetensors")
    assert load_file(tmp_path / "rl" / "av_adapter" / "soft_tokens.safetensors").keys() == before.keys()
    av, _ = load_av_folder(tmp_path / "rl" / "av_adapter")
    assert torch.equal(projector_of(av.model).out.weight, before["out.weight"])
