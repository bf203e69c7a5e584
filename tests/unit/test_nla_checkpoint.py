"""Tiny NLA checkpoints in the released layout: save, load, use, and refuse drift or mismatched pairs."""

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from nla.autoencoder.checkpoint import save_verbalizer, verbalizer_tokens
from nla.autoencoder.meta import META_FILE, ModelMeta
from nla.autoencoder.nla import NLA
from nla.autoencoder.reconstructor import Reconstructor
from nla.autoencoder.verbalizer import Verbalizer
from nla.autoencoder.verbalizer_prompt import AV_TEMPLATE, choose_marker, injection_site, prompt_ids
from nla.errors import NLAError

AR_TEMPLATE = "A language model's thought, described:\n{explanation}\nThe thought described above is"


def build_tiny_nla(folder, model_path, layer=1):
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    marker = choose_marker(tokenizer)
    ids = prompt_ids(tokenizer, AV_TEMPLATE, marker)
    av = Verbalizer(AutoModelForCausalLM.from_pretrained(model_path), tokenizer, ids, injection_site(ids, marker), 20.0)
    templates = {"av": AV_TEMPLATE, "ar": AR_TEMPLATE}
    save_verbalizer(folder / "av", av, ModelMeta(
        role="av", d_model=32, extraction_layer_index=layer, injection_scale=20.0, mse_scale=32 ** 0.5,
        tokens=verbalizer_tokens(av), prompt_templates=templates, base_checkpoint="tiny"))
    ar = Reconstructor(AutoModelForCausalLM.from_pretrained(model_path), layer=layer)
    ar.save_released(folder / "ar", tokenizer, ModelMeta(
        role="ar", d_model=32, extraction_layer_index=layer, injection_scale=None, mse_scale=32 ** 0.5,
        prompt_templates=templates, base_checkpoint="tiny"))
    return folder


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
    scores = nla.score(vectors, ["rivers", None, "poems"])
    assert scores[1] is None and all(0 <= s <= 4 for s in (scores[0], scores[2]))
    assert nla.score(predicted, ["rivers and farms", "python code", "a poem"]) == pytest.approx([0, 0, 0], abs=1e-5)


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
