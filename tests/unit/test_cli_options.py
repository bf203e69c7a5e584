"""A stage's command-line options are generated from its config dataclass: every field is an option with the
field's default and help, and what the command runs is the config built from them."""

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from nla.cli import app
from nla.data.config import ExtractConfig
from nla.eval.config import EvalConfig
from nla.explainers.config import EXPLAINER_NAMES, ExplainDataConfig
from nla.explainers.stage import EXPLAINERS
from nla.rl.config import RLConfig
from nla.train.config import ARTrainConfig, AVTrainConfig

COMMANDS = {"train-ar": ARTrainConfig, "train-av": AVTrainConfig, "rl": RLConfig, "eval": EvalConfig,
            "extract": ExtractConfig, "explain-data": ExplainDataConfig}


def options(command: str) -> dict:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params if p.param_type_name == "option"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_field_is_an_option_with_its_default_and_help(command):
    found = options(command)
    for field in dataclasses.fields(COMMANDS[command]):
        if field.name == "splits" and command == "extract":  # extract's --validation / --test
            continue
        assert field.name in found, f"{command} lacks --{field.name.replace('_', '-')}"
        option = found[field.name]
        default = ",".join(field.default) if isinstance(field.default, tuple) else field.default  # comma-separated
        if field.default is not dataclasses.MISSING and not (command == "eval" and field.name == "out"):
            assert option.default == default, field.name
        assert field.metadata.get("help") or field.name in ("steps", "seed", "batch_size", "epochs"), field.name


def test_the_command_runs_the_config_its_options_build(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("nla.train.av.train_av", lambda cfg: seen.setdefault("cfg", cfg) and
                        {"main_process": True, "steps": 1, "injection_scale": 1.0, "out": str(cfg.out)})
    result = CliRunner().invoke(app, ["train-av", "--data", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "o"),
                                      "--lr", "0.5", "--injection", "residual", "--init-from", "default",
                                      "--dtype", "bf16"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert isinstance(cfg, AVTrainConfig) and cfg.lr == 0.5 and cfg.injection == "residual"
    assert cfg.init_from == "default" and cfg.dtype == "bf16" and cfg.batch_size == 8
    wrong = CliRunner().invoke(app, ["train-av", "--data", "d", "--out", str(tmp_path / "o3"), "--dtype", "fp8"])
    assert wrong.exit_code == 2 and "unknown dtype 'fp8'" in wrong.output  # checked before the stage runs
    bad = CliRunner().invoke(app, ["train-av", "--data", "d", "--out", str(tmp_path / "o2"), "--epochs", "-1"])
    assert bad.exit_code == 2 and "must be positive" in bad.output  # the config's own check, one line


def test_explain_data_splits_parse_from_one_comma_separated_option(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("nla.explainers.stage.explain_data", lambda cfg: seen.setdefault("cfg", cfg) and
                        {"splits": {}})
    result = CliRunner().invoke(app, ["explain-data", "--dataset", str(tmp_path), "--splits", "ar_sft, rl",
                                      "--salient-words", "3"])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].splits == ("ar_sft", "rl") and seen["cfg"].salient_words == 3
    assert set(EXPLAINERS) == set(EXPLAINER_NAMES)  # every name the config accepts has a backend
