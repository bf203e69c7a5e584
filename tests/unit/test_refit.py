"""The refit stage: a fresh AR trained on the SFT AV's own explanations, beside a copy of that AV."""

import json

import pyarrow.parquet as pq
import pytest
import torch

from conftest import build_sft_nla
from nla.autoencoder.nla import NLA
from nla.errors import NLAError
from nla.inputs import vectors_of
from nla.train.refit import DONE_FILE, PAIRS_FILE, RefitConfig, refit_ar

pytestmark = pytest.mark.slow  # trains ARs and AVs


@pytest.fixture(scope="module")
def refitted(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("refit")
    sft, pairs = build_sft_nla(root, tiny_llama)
    cfg = RefitConfig(nla=sft, data=pairs, out=root / "refit", lr=1e-2, batch_size=16, epochs=2, lora_rank=4,
                      max_new_tokens=26, device="cpu")
    return cfg, refit_ar(cfg, progress=False)


def test_the_pairs_hold_the_avs_own_texts_and_drop_untagged_ones(refitted):
    cfg, summary = refitted
    source, pairs = pq.read_table(cfg.data), pq.read_table(cfg.out / PAIRS_FILE)
    sft = NLA.load(cfg.nla, device="cpu")
    written = [e.text for e in sft.explain(torch.from_numpy(vectors_of(source).copy()), max_new_tokens=26)]
    tagged = [i for i, t in enumerate(written) if t is not None]
    assert pairs.column("explanation").to_pylist() == [written[i] for i in tagged]
    assert pairs.column("warm_explanation").to_pylist() == [source.column("explanation")[i].as_py() for i in tagged]
    assert summary["untagged_dropped"] == len(written) - len(tagged)
    assert torch.equal(torch.from_numpy(vectors_of(pairs)), torch.from_numpy(vectors_of(source))[tagged])


def test_the_output_is_a_complete_nla_with_the_sft_av_and_a_new_ar(refitted):
    cfg, _ = refitted
    sft, refit = NLA.load(cfg.nla, device="cpu"), NLA.load(cfg.out, device="cpu")
    vectors = torch.from_numpy(vectors_of(pq.read_table(cfg.data)).copy())[:4]
    assert [e.text for e in refit.explain(vectors, max_new_tokens=26)] == \
        [e.text for e in sft.explain(vectors, max_new_tokens=26)]
    texts = ["about river", "about bread"]
    assert not torch.allclose(refit.reconstruct(texts), sft.reconstruct(texts))
    assert json.loads((cfg.out / DONE_FILE).read_text())["rows"] == len(vectors_of(pq.read_table(cfg.data)))


def test_a_finished_refit_is_not_replaced_without_overwrite(refitted):
    cfg, _ = refitted
    with pytest.raises(NLAError, match="already holds a re-fitted AR"):
        refit_ar(cfg, progress=False)


def test_a_kill_after_the_av_copy_resumes_without_retraining(refitted):
    cfg, _ = refitted
    (cfg.out / DONE_FILE).unlink()  # killed after the AV was copied, before the marker
    trained_steps = (cfg.out / "ar_metrics.jsonl").read_text()
    assert refit_ar(cfg, progress=False)["rows"] > 0 and (cfg.out / DONE_FILE).exists()
    assert (cfg.out / "ar_metrics.jsonl").read_text() == trained_steps  # the AR was not trained again


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(NLAError, match="max_new_tokens"):
        RefitConfig(nla=tmp_path, data=tmp_path / "x.parquet", out=tmp_path / "o", max_new_tokens=0)
    with pytest.raises(NLAError, match="not found"):
        refit_ar(RefitConfig(nla=tmp_path, data=tmp_path / "x.parquet", out=tmp_path / "o"), progress=False)
    (tmp_path / "x.parquet").write_text("not a parquet")
    with pytest.raises(NLAError, match="x.parquet cannot be read as a parquet written by nla explain-data"):
        refit_ar(RefitConfig(nla=tmp_path, data=tmp_path / "x.parquet", out=tmp_path / "o"), progress=False)
