"""`nla train`'s config: every section validated before any work, changes named, presets load."""

import pytest
import yaml

from nla.changes import changed_settings, describe_changes
from nla.errors import NLAError
from nla.pipeline.train import TRAIN_PRESETS, load_config, preset_path, run_pipeline, stage_configs


def write(tmp_path, data) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", TRAIN_PRESETS)
def test_presets_build_every_stage(tmp_path, name):
    configs = stage_configs(load_config(preset_path(name)), tmp_path / "run")
    # The presets skip RL and train the text-oracle AR that eval reports beside the NLA; the shipped recipe
    # (smollm2) adds expert iteration after refit, the second architecture's stops at refit.
    expert = ["expert"] if name == "smollm2-135m" else []
    assert list(configs) == ["extract", "explain", "sft-ar", "sft-av", "refit", *expert, "oracle", "eval",
                             "calibrate"]
    assert configs["sft-av"].injection == "residual" and configs["refit"].nla == tmp_path / "run" / "sft"
    last = "expert" if expert else "refit"
    assert configs["eval"].nla == tmp_path / "run" / last and configs["extract"].splits.rl == 0


def test_each_optional_stage_hands_its_nla_to_the_next(tmp_path):
    def chain(data):
        configs = stage_configs(load_config(write(tmp_path, data)), tmp_path / "run")
        return list(configs), configs["eval"].nla.name
    assert chain({"refit": {"epochs": 0}, "rl": {"steps": 0}}) == (
        ["extract", "explain", "sft-ar", "sft-av", "eval", "calibrate"], "sft")
    assert chain({"rl": {"steps": 3}}) == (
        ["extract", "explain", "sft-ar", "sft-av", "refit", "rl", "eval", "calibrate"], "rl")
    assert stage_configs(load_config(write(tmp_path, {"rl": {"steps": 3}})), tmp_path / "run")["rl"].nla.name == \
        "refit"
    # expert iteration: only with a section, after refit, its NLA handed on; rounds 0 skips it
    assert chain({"expert": {"rounds": 2}, "rl": {"steps": 3}}) == (
        ["extract", "explain", "sft-ar", "sft-av", "refit", "expert", "rl", "eval", "calibrate"], "rl")
    configs = stage_configs(load_config(write(tmp_path, {"expert": {"rows": 64}, "rl": {"steps": 0}})), tmp_path / "run")
    assert configs["expert"].nla.name == "refit" and configs["eval"].nla.name == "expert"
    assert configs["expert"].data.name == "av_sft.parquet" and configs["expert"].rows == 64
    assert "expert" not in chain({"expert": {"rounds": 0}})[0]


def test_expert_iteration_needs_a_lora_av_and_known_settings(tmp_path):
    with pytest.raises(NLAError, match="av.lora_rank is 0"):
        stage_configs(load_config(write(tmp_path, {"expert": {"rounds": 1}, "av": {"lora_rank": 0}})), tmp_path / "r")
    with pytest.raises(NLAError, match="section 'expert': key\\(s\\) steps cannot be set there"):
        stage_configs(load_config(write(tmp_path, {"expert": {"steps": 3}})), tmp_path / "r")
    with pytest.raises(NLAError, match="samples at temperature 0"):
        stage_configs(load_config(write(tmp_path, {"expert": {"temperature": 0.0}})), tmp_path / "r")


def test_the_text_oracle_runs_only_when_asked_and_eval_reads_it(tmp_path):
    run = tmp_path / "run"
    assert stage_configs(load_config(write(tmp_path, {})), run)["eval"].oracle_ar is None
    configs = stage_configs(load_config(write(tmp_path, {"oracle": {"epochs": 0.5, "lr": 1e-3}})), run)
    assert list(configs)[-3:] == ["oracle", "eval", "calibrate"] and configs["eval"].oracle_ar == run / "oracle"
    # It reads the true contexts of the activations, not the warm-start explanations.
    oracle = configs["oracle"]
    assert oracle.text_column == "detokenized_text_truncated" and oracle.data == run / "acts" / "ar_sft.parquet"


@pytest.mark.parametrize("data,message", [
    ({"modle": "x"}, "unknown key\\(s\\) modle"),
    ({"ar": [1, 2]}, "'ar' must be a mapping"),
    ({"ar": {"learning_rate": 1}}, "section 'ar': key\\(s\\) learning_rate cannot be set there"),
    ({"ar": {"out": "elsewhere"}}, "section 'ar': key\\(s\\) out cannot be set there"),
    ({"av": {"injection": "middle"}}, "injection 'middle' is unknown"),
    ({"rl": {"steps": 5, "group_size": 1}}, "group-size must be at least 2"),
    ({"refit": {"max_new_tokens": 0}}, "refit: max_new_tokens must be at least 1"),
    ({"refit": {"nla": "elsewhere"}}, "section 'refit': key\\(s\\) nla cannot be set there"),
    ({"oracle": {"epochs": 1.0, "text_column": "x"}}, "section 'oracle': key\\(s\\) text_column cannot be set"),
    ({"ar": {"lr": "fast"}}, "section 'ar': lr is 'fast', not of type float"),
    ({"rl": {"steps": 1.5}}, "section 'rl': steps is 1.5, not of type int"),
    ({"av": {"export": 1}}, "section 'av': export is 1, not of type bool"),
    ({"extract": {"max_docs": True}}, "section 'extract': max_docs is True, not of type int \\| None"),
    ({"layer": "ten"}, "layer is 'ten', not of type int \\| None"),
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
    bad.write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(NLAError, match="bad.yaml is not a UTF-8 text file"):
        load_config(bad)
    with pytest.raises(NLAError, match="unknown preset 'tiny'"):
        preset_path("tiny")


def test_a_changed_config_is_refused_and_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.yaml").write_text(yaml.safe_dump({"model": "smollm2-135m", "ar": {"lr": 0.001}}))
    with pytest.raises(NLAError, match="changed: ar.lr 0.001 -> 0.01, corpus None -> 'x.txt'"):
        run_pipeline(load_config(write(tmp_path, {"model": "smollm2-135m", "corpus": "x.txt",
                                                  "ar": {"lr": 0.01}})), run)


def test_changes_are_named_with_old_and_new_values():
    assert changed_settings({"a": 1, "s": {"x": 1}}, {"a": 1, "s": {"x": 2, "y": 3}}) == [("s.x", 1, 2),
                                                                                         ("s.y", None, 3)]
    assert describe_changes({"lr": 0.001, "model": "a"}, {"lr": 0.01, "model": "b"}) == \
        "lr 0.001 -> 0.01, model 'a' -> 'b'"
    many = describe_changes({f"k{i}": i for i in range(9)}, {f"k{i}": i + 1 for i in range(9)}, limit=2)
    assert many == "k0 0 -> 1, k1 1 -> 2, and 7 more"
    long = describe_changes({"text": "x" * 100}, {"text": "y"})
    assert long.startswith("text 'xxx") and "...  -> 'y'" not in long and long.endswith("... -> 'y'")


def test_sft_stages_are_finished_by_their_adapter_or_an_older_runs_merged_folder(tmp_path):
    from nla.pipeline.train import finished

    configs = stage_configs(load_config(preset_path("smollm2-135m")), tmp_path / "run")
    sft = tmp_path / "run" / "sft"
    assert not finished("sft-ar", configs["sft-ar"]) and not finished("sft-av", configs["sft-av"])
    (sft / "ar_adapter").mkdir(parents=True)
    assert not finished("sft-ar", configs["sft-ar"])  # a folder without its sidecar is not done
    (sft / "ar_adapter" / "nla_meta.yaml").write_text("role: ar\n")  # what a LoRA run renames in last
    assert finished("sft-ar", configs["sft-ar"]) and not finished("sft-av", configs["sft-av"])
    (sft / "av").mkdir()
    (sft / "av" / "nla_meta.yaml").write_text("role: av\n")  # a run from before adapters-only (or lora_rank 0)
    assert finished("sft-av", configs["sft-av"])
