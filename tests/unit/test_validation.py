"""The validation layer (nla/inputs.py) and the checks routed through it: datasets, mismatches between
things used together, damaged files, output folders, the CLI's one-line errors and --debug."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from conftest import TOY_WORDS, build_tiny_nla, write_toy_pairs
from nla.cli import app
from nla.data.dataset import rows_to_table
from nla.errors import NLAError
from nla.inputs import check_match, check_out_folder, damaged_file, open_dataset, same_target
from nla.layout import sidecar_path


def split(path, *, rows: int = 4, d: int = 8, layer: int | None = 3, model: str | None = "org/model"):
    """A dataset split with a sidecar naming its layer and model (or none when both are None)."""
    columns = {name: [None] * rows for name in ("doc_id", "position", "n_raw_tokens", "activation_layer", "token_id",
                                                 "token", "detokenized_text_truncated", "source", "genre", "topic",
                                                 "split")}
    pq.write_table(rows_to_table(np.ones((rows, d), np.float32), columns, d), path)
    if layer is not None or model is not None:
        sidecar_path(path).write_text(yaml.safe_dump({"kind": "nla_dataset", "extraction": {
            "layer_index": layer, "base_model": model, "d_model": d}}))
    return path


# ---------------------------------------------------------------- open_dataset


def test_a_good_split_opens_with_its_layer_width_and_model(tmp_path):
    data = open_dataset(split(tmp_path / "s.parquet"), layer=3, d_model=8, target="ORG/model", against="the NLA")
    assert (data.layer, data.width, data.model, data.table.num_rows) == (3, 8, "org/model", 4)
    assert tuple(data.vectors().shape) == (4, 8)


@pytest.mark.parametrize("damage, message", [
    ("missing", "--data {p} not found; pass"),
    ("folder", "--data {p} is a folder"),
    ("text", "--data {p} cannot be read as a parquet file"),
    ("truncated", "--data {p} cannot be read as a parquet file"),
    ("empty file", "--data {p} cannot be read as a parquet file"),
    ("no vectors", "--data {p} lacks column(s) activation_vector"),
    ("variable-length vectors", "stores activation_vector as list<"),
    ("no rows", "--data {p} has 0 row(s)"),
    ("bad sidecar", "{p}.nla_meta.yaml is not valid YAML"),
    ("binary sidecar", "{p}.nla_meta.yaml is not a UTF-8 text file"),
])
def test_a_bad_split_is_one_line_naming_it(tmp_path, damage, message):
    path = tmp_path / "s.parquet"
    if damage == "folder":
        path.mkdir()
    elif damage == "text":
        path.write_text("doc_id,position\n1,2\n")
    elif damage == "empty file":
        path.write_bytes(b"")
    elif damage == "no vectors":
        pq.write_table(pa.table({"doc_id": ["a"]}), path)
    elif damage == "variable-length vectors":
        pq.write_table(pa.table({"activation_vector": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))}), path)
    elif damage == "no rows":
        split(path, rows=0)
    elif damage != "missing":
        split(path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "bad sidecar":
        sidecar_path(path).write_text("extraction: [\n")
    elif damage == "binary sidecar":
        sidecar_path(path).write_bytes(b"\xff\xfe\x00")
    with pytest.raises(NLAError) as caught:
        open_dataset(path)
    assert message.format(p=path) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("against, message", [
    ({"layer": 10}, "has layer 3 but the NLA runs/nla has layer 10"),
    ({"d_model": 16}, "has d_model 8 but the NLA runs/nla has d_model 16"),
    ({"target": "org/other"}, "has target org/model but the NLA runs/nla has target org/other"),
])
def test_a_split_used_with_another_layer_width_or_target_is_refused(tmp_path, against, message):
    with pytest.raises(NLAError, match=message):
        open_dataset(split(tmp_path / "s.parquet"), against="the NLA runs/nla", **against)


def test_the_layer_comes_from_the_column_when_there_is_no_sidecar(tmp_path):
    path = split(tmp_path / "s.parquet", layer=None, model=None)
    table = pq.read_table(path)
    column = table.column_names.index("activation_layer")
    pq.write_table(table.set_column(column, "activation_layer", pa.array([5, 5, 6, 5], pa.int16())), path)
    with pytest.raises(NLAError, match="mixes activations of layers"):
        open_dataset(path).layer
    pq.write_table(table.set_column(column, "activation_layer", pa.array([5] * 4, pa.int16())), path)
    assert open_dataset(path).layer == 5
    assert open_dataset(split(tmp_path / "none.parquet", layer=None, model=None)).layer is None


# ---------------------------------------------------------------- comparisons


def test_targets_compare_only_when_both_names_can_be_compared(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "x").mkdir()
    assert same_target("Qwen/Qwen2.5-7B", "qwen/qwen2.5-7b") is True
    assert same_target("smollm2-135m", "gemma3-270m") is False
    assert same_target(str(tmp_path / "model"), str(tmp_path / "x" / ".." / "model")) is True
    assert same_target(str(tmp_path / "model"), "org/model") is None  # a folder may hold that hub model
    assert same_target("/gone/model", "/other/model") is None  # folders not on this machine
    check_match("target", "a", str(tmp_path / "model"), "b", "tiny", fix="x")  # cannot tell: no error
    check_match("layer", "a", None, "b", 3, fix="x")  # one side does not say: no error
    with pytest.raises(NLAError, match="^a has layer 2 but b has layer 3; fix it$"):
        check_match("layer", "a", 2, "b", 3, fix="fix it")


def test_a_damaged_safetensors_file_is_named(tmp_path, tiny_llama):
    from nla.autoencoder.reconstructor import read_value_head

    nla = build_tiny_nla(tmp_path / "nla", tiny_llama)
    head = nla / "ar" / "value_head.safetensors"
    head.write_bytes(head.read_bytes()[:50])
    with pytest.raises(NLAError, match=f"{head} cannot be read as a safetensors file"):
        read_value_head(nla / "ar", 32)
    with pytest.raises(NLAError, match="x.bin cannot be read as a thing"):
        with damaged_file("x.bin", "a thing"):
            raise ValueError("bad bytes")
    with pytest.raises(ZeroDivisionError):  # not a file's fault: left alone
        with damaged_file("x.bin", "a thing"):
            1 / 0


def test_an_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    check_out_folder(tmp_path / "new")
    check_out_folder(tmp_path)
    with pytest.raises(NLAError, match="--out .*f is a file, not a folder"):
        check_out_folder(tmp_path / "f")


# ---------------------------------------------------------------- the SFT stages


@pytest.fixture()
def toy(tmp_path):
    return write_toy_pairs(tmp_path / "toy.parquet", TOY_WORDS, rows=8, noise=0.3, template="about {word}")[0]


def sft_config(kind, data, out, model, **settings):
    from nla.train.config import ARTrainConfig, AVTrainConfig

    config = ARTrainConfig if kind == "ar" else AVTrainConfig
    return config(data=data, out=out, model=str(model), epochs=0.1, checkpoint_every=1000, device="cpu", **settings)


def train(kind, cfg):
    from nla.train.ar import train_ar
    from nla.train.av import train_av

    return (train_ar if kind == "ar" else train_av)(cfg, progress=False)


@pytest.mark.parametrize("kind", ["ar", "av"])
@pytest.mark.parametrize("layer", [99, -3])
def test_a_layer_the_model_lacks_is_refused_before_training(tmp_path, toy, tiny_llama, kind, layer):
    """train-av --layer 99 used to train and write extraction_layer_index: 99."""
    with pytest.raises(NLAError, match=f"layer {layer} is out of range .* 4 blocks"):
        train(kind, sft_config(kind, toy, tmp_path / "run", tiny_llama, layer=layer))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["ar", "av"])
def test_a_layer_other_than_the_datas_is_refused(tmp_path, toy, tiny_llama, kind):
    """train-ar --layer 10 on layer-20 data used to label the AR with layer 10."""
    meta = {"kind": "nla_dataset", "extraction": {"layer_index": 2, "base_model": str(tiny_llama)}}
    sidecar_path(toy).write_text(yaml.safe_dump(meta))
    with pytest.raises(NLAError, match=r"the run \(--layer\) has layer 1 but --data .* has layer 2; drop --layer"):
        train(kind, sft_config(kind, toy, tmp_path / "run", tiny_llama, layer=1))
    sidecar_path(toy).unlink()
    with pytest.raises(NLAError, match="does not say which layer .* pass --layer"):
        train(kind, sft_config(kind, toy, tmp_path / "run", tiny_llama))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind, other", [("av", "ar"), ("ar", "av")])
def test_a_run_folder_holding_the_other_half_at_another_layer_is_refused(tmp_path, toy, tiny_llama, kind, other):
    """train-av into a folder whose AR reads another layer used to accept the mismatch."""
    pair = build_tiny_nla(tmp_path / "pair", tiny_llama, layer=2)
    shutil.copytree(pair / other, tmp_path / "run" / other)
    with pytest.raises(NLAError, match=f"this run has layer 1 but the {other.upper()} already in .* has layer 2"):
        train(kind, sft_config(kind, toy, tmp_path / "run", tiny_llama, layer=1))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [other]


# ---------------------------------------------------------------- the command line


def test_plot_skips_a_line_still_being_written_and_names_a_damaged_one(tmp_path):
    from nla.rl.plots import read_metrics

    path = tmp_path / "rl_metrics.jsonl"
    path.write_text('{"step": 1, "reward": -1}\n{"step": 2, "rew')  # a run still writing step 2
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    path.write_text('{"step": 1, "rew\n{"step": 2, "reward": -1}\n')
    with pytest.raises(NLAError, match="rl_metrics.jsonl line 1 is not a step record"):
        read_metrics(tmp_path)
    path.write_text("\n")
    with pytest.raises(NLAError, match="holds no finished step yet"):
        read_metrics(tmp_path)


def test_an_internal_error_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    import nla.rl.plots

    def broken(run):
        raise KeyError("a bug")

    monkeypatch.delenv("NLA_DEBUG", raising=False)
    monkeypatch.setattr(nla.rl.plots, "plot_run", broken)
    result = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == [
        "error: internal error (KeyError: 'a bug'); rerun with --debug for the traceback and report it"]
    debug = CliRunner().invoke(app, ["--debug", "plot", str(tmp_path)])
    assert isinstance(debug.exception, KeyError)  # re-raised: python prints its traceback
    monkeypatch.setenv("NLA_DEBUG", "1")
    assert isinstance(CliRunner().invoke(app, ["plot", str(tmp_path)]).exception, KeyError)


def test_an_os_error_naming_a_file_is_a_user_error(tmp_path, monkeypatch):
    import nla.rl.plots

    def denied(run):
        raise PermissionError(13, "Permission denied", str(tmp_path / "rl_curves.png"))

    monkeypatch.delenv("NLA_DEBUG", raising=False)
    monkeypatch.setattr(nla.rl.plots, "plot_run", denied)
    result = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'rl_curves.png'}: Permission denied; check the path and its permissions"]


def test_a_hub_id_that_is_not_there_fails_at_once(monkeypatch, tmp_path):
    """--model nosuch/model used to print a minute of hub retries before its line."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["info", "--model", "nosuch/model"])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "error: nosuch/model is not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it once online "
        "(unset HF_HUB_OFFLINE), or pass a local folder"]
    assert time.monotonic() - started < 10


def test_a_missing_or_unreadable_file_is_not_called_damaged(tmp_path):
    with pytest.raises(FileNotFoundError):  # the CLI prints it as "PATH: No such file or directory"
        with damaged_file(tmp_path / "gone", "a thing"):
            (tmp_path / "gone").read_text()
    with pytest.raises(NLAError, match=r"cannot be read as a saved state \(bad zip\)"):
        with damaged_file(tmp_path, "a saved state", also=(RuntimeError,)):
            raise RuntimeError("bad zip")
