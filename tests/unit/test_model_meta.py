import json

import pytest
import yaml

from nla.autoencoder.meta import META_FILE, ModelMeta, read_model_meta, write_model_meta
from nla.errors import NLAError

TOKENS = {"injection_char": "㈜", "injection_token_id": 246566, "injection_left_neighbor_id": 568,
          "injection_right_neighbor_id": 236768, "critic_suffix_ids": [5, 6]}


def test_round_trip_of_our_sidecar(tmp_path):
    meta = ModelMeta(role="av", d_model=640, extraction_layer_index=12, injection_scale=80000.0, mse_scale=25.3,
                     tokens=TOKENS, prompt_templates={"av": "Explain {injection_char}", "ar": "Text: {explanation}"},
                     base_checkpoint="gemma3-270m", stage="sl", training={"lr": 2e-5})
    write_model_meta(tmp_path, meta)
    raw = yaml.safe_load((tmp_path / META_FILE).read_text())
    assert raw["kind"] == "nla_model" and raw["schema_version"] == 2 and raw["role"] == "av"
    assert raw["extraction"] == {"injection_scale": 80000.0, "mse_scale": 25.3}
    back = read_model_meta(tmp_path)
    assert back.created_at and back == ModelMeta(**{**meta.__dict__, "created_at": back.created_at})


def test_older_sidecars_with_actor_critic_keys_load(tmp_path):
    (tmp_path / META_FILE).write_text(yaml.safe_dump({
        "kind": "nla_model", "schema_version": 1, "role": "critic", "d_model": 3584,
        "extraction": {"injection_scale": None, "mse_scale": 59.87},
        "prompt_templates": {"actor": "A {injection_char}", "critic": "C {explanation}"},
        "critic": {"num_hidden_layers": 20}, "tokens": TOKENS, "stage": "rl"}, allow_unicode=True))
    meta = read_model_meta(tmp_path)
    # The legacy critic.num_hidden_layers means K itself in the reference (not K+1).
    assert meta.role == "ar" and meta.extraction_layer_index == 20
    assert meta.prompt_templates == {"av": "A {injection_char}", "ar": "C {explanation}"}
    assert meta.injection_scale is None and meta.stage == "rl"


def test_an_ars_layer_falls_back_to_its_config_but_an_avs_does_not(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 33}}))
    (tmp_path / META_FILE).write_text(yaml.safe_dump({"role": "critic", "d_model": 8}))
    assert read_model_meta(tmp_path).extraction_layer_index == 32  # an AR holds blocks 0..K
    (tmp_path / META_FILE).write_text(yaml.safe_dump({"role": "actor", "d_model": 8}))
    assert read_model_meta(tmp_path).extraction_layer_index is None  # a full AV's config says nothing about K


@pytest.mark.parametrize("value,expected", [(80000, 80000.0), ("150", 150.0), ("sqrt_d_model", 8 ** 0.5),
                                            (None, None), ("raw", None)])
def test_scales_resolve_as_the_reference_resolves_them(tmp_path, value, expected):
    (tmp_path / META_FILE).write_text(yaml.safe_dump({"role": "av", "d_model": 8, "extraction_layer_index": 3,
                                                      "extraction": {"injection_scale": value}}))
    assert read_model_meta(tmp_path).injection_scale == expected


@pytest.mark.parametrize("content,message", [
    (None, "has no nla_meta.yaml"),
    ({"role": "judge", "d_model": 8}, "role 'judge'"),
    ({"kind": "nla_dataset", "role": "av", "d_model": 8}, "'nla_dataset' sidecar"),
    ({"role": "ar", "d_model": 8}, "names no extraction layer"),
    ({"role": "ar"}, "has no d_model"),
    ("role: [av", "is not valid YAML"),
    ({"role": "av", "d_model": 8, "extraction_layer_index": 1, "extraction": {"injection_scale": "big"}},
     "extraction.injection_scale 'big'"),
])
def test_bad_sidecars_name_the_problem(tmp_path, content, message):
    if content is not None:
        (tmp_path / META_FILE).write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    with pytest.raises(NLAError, match=message):
        read_model_meta(tmp_path)
