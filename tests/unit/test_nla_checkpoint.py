"""Tiny NLA checkpoints in the released layout: save, load, use, and refuse drift or mismatched pairs."""

import pytest
import torch
import yaml

from conftest import AR_TEMPLATE, build_tiny_nla  # noqa: F401  (other test modules import build_tiny_nla from here)
from nla.autoencoder.meta import META_FILE
from nla.autoencoder.nla import NLA
from nla.autoencoder.verbalizer_prompt import AV_TEMPLATE
from nla.errors import NLAError


def edit_sidecar(path, **changes):
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


@pytest.fixture()
def tiny_nla(tmp_path, tiny_llama):
    return build_tiny_nla(tmp_path / "nla", tiny_llama)


def test_load_explain_reconstruct_score(tiny_nla):
    nla = NLA.load(tiny_nla)
    assert (nla.d_model, nla.layer) == (32, 1)
    vectors = torch.randn(3, 32)
    explanations = nla.explain(vectors, max_new_tokens=6)
    assert len(explanations) == 3 and all(e.text is None for e in explanations)  # untrained: no tags
    predicted = nla.reconstruct(["rivers and farms", "python code", "a poem"])
    assert predicted.shape == (3, 32) and torch.isfinite(predicted).all()
    scores = nla.mse(vectors, ["rivers", None, "poems"])
    assert scores[1] is None and all(0 <= s <= 4 for s in (scores[0], scores[2]))
    assert nla.mse(predicted, ["rivers and farms", "python code", "a poem"]) == pytest.approx([0, 0, 0], abs=1e-5)


def test_older_actor_critic_sidecars_load(tiny_nla):
    edit_sidecar(tiny_nla / "av" / META_FILE, role="actor", prompt_templates={"actor": AV_TEMPLATE, "critic": AR_TEMPLATE})
    edit_sidecar(tiny_nla / "ar" / META_FILE, role="critic", prompt_templates={"actor": AV_TEMPLATE, "critic": AR_TEMPLATE})
    assert NLA.load(tiny_nla).ar_meta.role == "ar"


def test_marker_drift_is_named(tiny_nla):
    edit_sidecar(tiny_nla / "av" / META_FILE, tokens__injection_token_id=3)
    with pytest.raises(NLAError, match="tokenizer drift .* now encodes to"):
        NLA.load(tiny_nla)


def test_template_drift_is_named(tiny_nla):
    edit_sidecar(tiny_nla / "av" / META_FILE, tokens__injection_left_neighbor_id=5)
    with pytest.raises(NLAError, match="prompt drift .* neighbours are now"):
        NLA.load(tiny_nla)


def test_mismatched_pair_is_refused(tiny_nla, tmp_path, tiny_llama):
    other = build_tiny_nla(tmp_path / "other", tiny_llama, layer=2)
    (tiny_nla / "ar").rename(tmp_path / "old-ar")
    (other / "ar").rename(tiny_nla / "ar")
    with pytest.raises(NLAError, match="disagree on extraction_layer_index \\(1 vs 2\\)"):
        NLA.load(tiny_nla)


def test_not_an_nla_folder(tmp_path):
    with pytest.raises(NLAError, match="needs av/ and ar/"):
        NLA.load(tmp_path)


def test_loading_reads_each_folders_sidecar_once(tiny_nla, monkeypatch):
    """NLA.load reads each half's nla_meta.yaml once: one object, passed down, not re-read."""
    import nla.autoencoder.meta as meta

    reads = []
    real = meta.read_yaml_mapping
    monkeypatch.setattr(meta, "read_yaml_mapping", lambda path, *a: reads.append(path) or real(path, *a))
    NLA.load(tiny_nla)
    assert sorted(p.parent.name for p in reads) == ["ar", "av"]
