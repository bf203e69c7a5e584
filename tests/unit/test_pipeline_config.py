"""`nla train`'s config: every section validated before any work, changes named, presets load."""

import pytest
import yaml

from nla.errors import NLAError
from nla.train.pipeline import PRESETS, differences, load_config, preset_path, run_pipeline, stage_configs


def write(tmp_path, data) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", PRESETS)
def test_presets_build_every_stage(tmp_path, name):
    configs = stage_configs(load_config(preset_path(name)), tmp_path / "run")
    assert list(configs) == ["extract", "explain", "sft-ar", "sft-av", "eval"]  # presets skip RL (steps 0)
    assert configs["sft-av"].injection == "residual" and configs["eval"].nla == tmp_path / "run" / "sft"


@pytest.mark.parametrize("data,message", [
    ({"modle": "x"}, "unknown key\\(s\\) modle"),
    ({"ar": [1, 2]}, "'ar' must be a mapping"),
    ({"ar": {"learning_rate": 1}}, "section 'ar': key\\(s\\) learning_rate cannot be set there"),
    ({"ar": {"out": "elsewhere"}}, "section 'ar': key\\(s\\) out cannot be set there"),
    ({"av": {"injection": "middle"}}, "injection 'middle' is unknown"),
    ({"rl": {"steps": 5, "group_size": 1}}, "group-size must be at least 2"),
])
def test_bad_configs_are_named_before_any_work(tmp_path, data, message):
    with pytest.raises(NLAError, match=message):
        run_pipeline(load_config(write(tmp_path, data)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_not_yaml_and_unknown_preset(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(NLAError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(NLAError, match="unknown preset 'tiny'"):
        preset_path("tiny")


def test_a_changed_config_is_refused_and_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.yaml").write_text(yaml.safe_dump({"model": "smollm2-135m", "ar": {"lr": 0.001}}))
    with pytest.raises(NLAError, match="changed: ar.lr, corpus"):
        run_pipeline(load_config(write(tmp_path, {"model": "smollm2-135m", "corpus": "x.txt",
                                                  "ar": {"lr": 0.01}})), run)


def test_differences_are_dotted_names():
    assert differences({"a": 1, "s": {"x": 1}}, {"a": 1, "s": {"x": 2, "y": 3}}) == ["s.x", "s.y"]
