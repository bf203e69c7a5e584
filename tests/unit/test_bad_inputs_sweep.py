"""The sweep: every command on a shared set of bad inputs stops with exactly one `error:` line on stderr,
exit code 2, no traceback, and no file changed (README: "bad input stops with one error: line and loses
nothing").

One small world is built once (a tiny llama's activation dataset, its explanations, a tiny NLA, a LoRA
run, an RL metrics file) and damaged copies of its parts beside it; each case runs one command in-process
(typer's CliRunner, stderr kept apart) with HF_HUB_OFFLINE=1, and the whole world is hashed before and after.
Two cases also run in a fresh `python -m nla.cli` process, where a traceback would really reach a terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from conftest import TOY_WORDS, build_tiny_nla, write_toy_pairs
from nla.cli import app
from nla.layout import sidecar_path

pytestmark = pytest.mark.slow  # every command once per bad input, some in subprocesses

SRC = Path(__file__).resolve().parents[2] / "src"
CORPUS = [f"Document {i}: the quick brown fox jumps over the lazy dog near the river bank, again and again."
          for i in range(30)]


# ---------------------------------------------------------------- the world and its damaged copies


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def copy_parquet(source: Path, target: Path, sidecar_edit=None) -> Path:
    shutil.copyfile(source, target)
    if sidecar_path(source).exists():
        meta = yaml.safe_load(sidecar_path(source).read_text())
        if sidecar_edit:
            sidecar_edit(meta)
        sidecar_path(target).write_text(yaml.safe_dump(meta))
    return target


def set_layer(layer: int):
    def edit(meta: dict) -> None:
        meta["extraction"]["layer_index"] = layer
    return edit


def damaged_copy(source: Path, target: Path, inner: str) -> Path:
    shutil.copytree(source, target)
    truncate(target / inner)
    return target


def narrow_split(path: Path) -> Path:
    """An extract-like split whose vectors are 16 wide (the tiny models are 32)."""
    rows = 4
    table = pa.table({"activation_vector": pa.array(np.ones((rows, 16), np.float32).tolist(),
                                                    type=pa.list_(pa.float32(), 16)),
                      "doc_id": [f"d{i}" for i in range(rows)], "position": list(range(rows)),
                      "token": ["a"] * rows, "explanation": ["about river"] * rows})
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_models, tiny_llama) -> dict[str, Path]:
    from nla.data.extract import ExtractConfig, extract
    from nla.explainers.stage import ExplainDataConfig, explain_data
    from nla.train.ar import train_ar
    from nla.train.av import train_av
    from nla.train.config import ARTrainConfig, AVTrainConfig

    root = tmp_path_factory.mktemp("sweep")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(CORPUS))
    w = {"root": root, "model": tiny_llama, "other_model": tiny_models["qwen2"], "acts": root / "acts",
         "file": root / "a-file.txt"}
    extract(ExtractConfig(out=w["acts"], model=str(tiny_llama), corpus=str(corpus), layer=1, positions_per_doc=3,
                          min_position=4), progress=False)
    explain_data(ExplainDataConfig(dataset=w["acts"], device="cpu"), progress=False)
    w["pairs"] = w["acts"] / "explanations-offline" / "ar_sft.parquet"
    w["heldout"] = w["acts"] / "validation.parquet"
    w["toy"] = write_toy_pairs(root / "toy.parquet", TOY_WORDS, rows=8, noise=0.3, template="about {word}")[0]
    w["nla"] = build_tiny_nla(root / "nla", tiny_llama, layer=1)
    w["file"].write_text("not a folder\n")

    bad = root / "bad"
    bad.mkdir()
    w["not_parquet"] = bad / "notes.parquet"
    w["not_parquet"].write_text("hello, I am a text file\n")
    w["truncated"] = copy_parquet(w["pairs"], bad / "truncated.parquet")
    truncate(w["truncated"])
    w["wrong_kind"] = bad / "wrong-kind.parquet"
    pq.write_table(pa.table({"step": [1, 2], "loss": [0.5, 0.4]}), w["wrong_kind"])
    w["missing"] = bad / "missing.parquet"
    w["narrow"] = narrow_split(bad / "narrow.parquet")
    w["bad_sidecar"] = copy_parquet(w["pairs"], bad / "bad-sidecar.parquet")
    sidecar_path(w["bad_sidecar"]).write_text("extraction: [unclosed\n  : :\n")
    w["layer2"] = copy_parquet(w["pairs"], bad / "layer2.parquet", set_layer(2))
    w["heldout_layer2"] = copy_parquet(w["heldout"], bad / "validation-layer2.parquet", set_layer(2))
    for name, text in (("config_yaml", b"model: [unclosed\n"), ("config_binary", b"\x00\xff\xfe binary"),
                       ("config_key", b"model: x\nnosuch: 1\n"), ("config_type", b"ar:\n  lr: fast\n")):
        w[name] = bad / f"{name}.yaml"
        w[name].write_bytes(text)
    w["heldout_other"] = copy_parquet(w["heldout"], bad / "validation-other-target.parquet",
                                      lambda meta: meta["extraction"].update(base_model="someorg/another-model"))

    w["nla_av_cut"] = damaged_copy(w["nla"], bad / "nla-av-cut", "av/model.safetensors")
    w["nla_head_cut"] = damaged_copy(w["nla"], bad / "nla-head-cut", "ar/value_head.safetensors")
    w["nla_tokenizer_cut"] = damaged_copy(w["nla"], bad / "nla-tokenizer-cut", "ar/tokenizer.json")
    w["model_cut"] = damaged_copy(tiny_llama, bad / "model-cut", "model.safetensors")
    w["nla_bad_meta"] = shutil.copytree(w["nla"], bad / "nla-bad-meta")
    (w["nla_bad_meta"] / "av" / "nla_meta.yaml").write_bytes(b"\x00\xff\xfe binary \x00")
    w["nla_mixed"] = shutil.copytree(w["nla"], bad / "nla-mixed")
    meta_path = w["nla_mixed"] / "av" / "nla_meta.yaml"
    meta_path.write_text(yaml.safe_dump({**yaml.safe_load(meta_path.read_text()), "extraction_layer_index": 2}))

    layer2 = build_tiny_nla(bad / "nla-L2", tiny_llama, layer=2)  # halves of another layer, as a shared --out
    w["out_with_av_l2"], w["out_with_ar_l2"] = bad / "run-av-L2", bad / "run-ar-L2"
    shutil.copytree(layer2 / "av", w["out_with_av_l2"] / "av")
    shutil.copytree(layer2 / "ar", w["out_with_ar_l2"] / "ar")
    shutil.rmtree(layer2)

    lora = root / "lora-run"  # a LoRA run whose adapter weights are cut short
    train_av(AVTrainConfig(data=w["pairs"], out=lora, lora_rank=2, epochs=0.1, checkpoint_every=1000,
                           device="cpu"), progress=False)
    w["lora_cut"] = bad / "lora-cut"
    shutil.copytree(lora / "av_adapter", w["lora_cut"] / "av_adapter")
    truncate(w["lora_cut"] / "av_adapter" / "adapter_model.safetensors")
    shutil.rmtree(lora)
    w["lora_nla"] = root / "lora-nla"  # an NLA of LoRA adapters, the kind nla expert trains on
    for config, train in ((AVTrainConfig, train_av), (ARTrainConfig, train_ar)):
        train(config(data=w["pairs"], out=w["lora_nla"], lora_rank=2, epochs=0.1, checkpoint_every=1000,
                     device="cpu"), progress=False)

    for name, damage in (("acts_cut", "truncate"), ("acts_text", "text"), ("acts_kind", "kind"),
                         ("acts_config", "config")):
        folder = shutil.copytree(w["acts"], bad / name, ignore=shutil.ignore_patterns("explanations-*"))
        split = folder / "ar_sft.parquet"
        if damage == "truncate":
            truncate(split)
        elif damage == "text":
            split.write_text("doc_id,position\nd1,3\n")
        elif damage == "kind":
            pq.write_table(pa.table({"doc_id": ["d1"]}), split)
        else:
            (folder / "config.yaml").write_text("- just\n- a list\n")
        w[name] = folder

    for state in ("ar_state", "av_state", "rl_state"):  # run folders whose saved state is damaged
        w[f"run_bad_{state}"] = bad / f"run-bad-{state}"
        (w[f"run_bad_{state}"] / state).mkdir(parents=True)
        (w[f"run_bad_{state}"] / state / "state.json").write_text('{"step": 3, "settings": {"lr"')

    step = {"step": 1, "reward": -1.0, "kl_k3": 0.0}
    w["rl_cut"], w["rl_empty"], w["rl_foreign"] = bad / "rl-cut", bad / "rl-empty", bad / "rl-foreign"
    for folder, text in ((w["rl_cut"], json.dumps(step) + "\n" + '{"step": 2, "rew\n' + json.dumps(step) + "\n"),
                         (w["rl_empty"], ""), (w["rl_foreign"], '{"name": "not a step"}\n')):
        folder.mkdir()
        (folder / "rl_metrics.jsonl").write_text(text)
    _index_world(w, corpus, bad)
    return w


def _index_world(w: dict, corpus: Path, bad: Path) -> None:
    """An activations-only audit index of the corpus, and damaged copies: cut, unfinished, of another NLA."""
    from nla.reading.config import IndexSettings
    from nla.reading.index import build_index, load_index_reader

    w["corpus"], w["index"] = corpus, w["root"] / "index"
    w["chat_wizard"] = bad / "chat-wizard.json"
    w["chat_wizard"].write_text(json.dumps([{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Boo"}]))
    reader = load_index_reader(w["nla"], IndexSettings(), model=str(w["model"]))
    build_index(reader, IndexSettings(corpus=str(corpus), positions="2"), w["index"], progress=False)
    shard = "shard-00000-of-00001"
    for name in ("index_cut", "index_unfinished", "index_other_nla"):
        w[name] = shutil.copytree(w["index"], bad / name.replace("_", "-"))
    truncate(w["index_cut"] / shard / "activations.f16")
    (w["index_unfinished"] / shard / "done.json").unlink()
    record = json.loads((w["index_other_nla"] / "index.json").read_text())
    (w["index_other_nla"] / "index.json").write_text(json.dumps({**record, "av_created_at": "2020-01-01T00:00:00"}))


# ---------------------------------------------------------------- the cases: (command, bad input) -> args


def sft(command: str, data: str, *extra: str):
    return lambda w: [command, "--data", str(w[data]), "--out", str(w["root"] / "new-run"), "--device", "cpu",
                      *extra]


def with_model(args_of):
    return lambda w: [*args_of(w), "--model", str(w["model"])]


def evaluate(nla: str = "nla", data: str = "heldout", *extra: str):
    return lambda w: ["eval", "--nla", str(w[nla]), "--data", str(w[data]), "--out", str(w["root"] / "new-eval"),
                      "--device", "cpu", "--max-new-tokens", "2", *extra]


def rl(nla: str = "nla", data: str = "heldout", *extra: str, out: str | None = None):
    return lambda w: ["rl", "--nla", str(w[nla]), "--data", str(w[data]), "--out", str(w[out] if out else
                                                                                     w["root"] / "new-rl"),
                      "--device", "cpu", "--steps", "1", "--batch-size", "2", "--group-size", "2", *extra]


DATA_FILES = ("not_parquet", "truncated", "wrong_kind", "missing", "narrow", "bad_sidecar")
CASES: dict[str, object] = {}
for command in ("train-ar", "train-av"):
    for bad in DATA_FILES:
        CASES[f"{command}/{bad}"] = with_model(sft(command, bad, "--layer", "1"))
    CASES[f"{command}/--layer vs data layer"] = sft(command, "layer2", "--layer", "1")
    CASES[f"{command}/--model vs data target"] = lambda w, c=command: [*sft(c, "pairs")(w), "--model",
                                                                       str(w["other_model"])]
    CASES[f"{command}/data of no known layer"] = with_model(sft(command, "toy"))
    CASES[f"{command}/--model nosuch/model"] = sft(command, "toy", "--layer", "1", "--model", "nosuch/model")
    CASES[f"{command}/--out is a file"] = lambda w, c=command: [c, "--data", str(w["pairs"]), "--out", str(w["file"])]
CASES["train-ar/--out holds an AV of another layer"] = lambda w: [
    "train-ar", "--data", str(w["pairs"]), "--out", str(w["out_with_av_l2"]), "--device", "cpu"]
CASES["train-av/--out holds an AR of another layer"] = lambda w: [
    "train-av", "--data", str(w["pairs"]), "--out", str(w["out_with_ar_l2"]), "--device", "cpu"]
CASES["train-ar/--out with a damaged state"] = lambda w: [
    "train-ar", "--data", str(w["pairs"]), "--out", str(w["run_bad_ar_state"]), "--device", "cpu"]
CASES["train-av/--out with a damaged state"] = lambda w: [
    "train-av", "--data", str(w["pairs"]), "--out", str(w["run_bad_av_state"]), "--device", "cpu"]
CASES["train-av/--layer 99"] = with_model(sft("train-av", "toy", "--layer", "99"))
CASES["train-av/--layer -3"] = with_model(sft("train-av", "toy", "--layer", "-3"))
for bad in (*DATA_FILES, "heldout_layer2", "heldout_other"):
    CASES[f"eval/--data {bad}"] = evaluate("nla", bad)
    CASES[f"rl/--data {bad}"] = rl("nla", bad)
for bad in ("nla_av_cut", "nla_head_cut", "nla_tokenizer_cut", "nla_bad_meta", "nla_mixed", "missing"):
    CASES[f"eval/--nla {bad}"] = evaluate(bad)
CASES["eval/--mean-from heldout_layer2"] = lambda w: [*evaluate()(w), "--mean-from", str(w["heldout_layer2"])]
CASES["eval/--out is a file"] = lambda w: ["eval", "--nla", str(w["nla"]), "--out", str(w["file"])]
CASES["rl/--nla nla_av_cut"] = rl("nla_av_cut")
CASES["rl/--out with a damaged state"] = rl(out="run_bad_rl_state")
CASES["rl/--out is a file"] = lambda w: ["rl", "--nla", str(w["nla"]), "--data", str(w["heldout"]), "--out",
                                         str(w["file"])]
CASES["calibrate/--data not_parquet"] = lambda w: ["calibrate", "--nla", str(w["nla"]), "--data",
                                                   str(w["not_parquet"]), "--device", "cpu"]
CASES["calibrate/--data heldout_layer2"] = lambda w: ["calibrate", "--nla", str(w["nla"]), "--data",
                                                      str(w["heldout_layer2"]), "--device", "cpu"]
CASES["calibrate/--nla nla_head_cut"] = lambda w: ["calibrate", "--nla", str(w["nla_head_cut"]), "--data",
                                                   str(w["heldout"]), "--device", "cpu"]
for bad in ("acts_cut", "acts_text", "acts_kind", "acts_config"):
    CASES[f"explain-data/--dataset {bad}"] = lambda w, b=bad: [
        "explain-data", "--dataset", str(w[b]), "--out", str(w["root"] / "new-explained"), "--device", "cpu"]
CASES["explain-data/--splits ''"] = lambda w: ["explain-data", "--dataset", str(w["acts"]), "--splits", "",
                                               "--out", str(w["root"] / "new-explained")]
CASES["explain-data/--splits nosuch"] = lambda w: ["explain-data", "--dataset", str(w["acts"]), "--splits",
                                                   "nosuch", "--out", str(w["root"] / "new-explained")]
CASES["explain-data/--out is a file"] = lambda w: ["explain-data", "--dataset", str(w["acts"]), "--out",
                                                   str(w["file"])]
for bad in ("nla_av_cut", "nla_head_cut"):
    CASES[f"explain/--nla {bad}"] = lambda w, b=bad: ["explain", "Rivers.", "--nla", str(w[b]), "--device", "cpu"]
CASES["explain/text that is not valid Unicode"] = lambda w: ["explain", "\udcff\udcfe", "--nla", str(w["nla"]),
                                                            "--model", str(w["model"]), "--device", "cpu"]
CASES["trace/text that is not valid Unicode"] = lambda w: ["trace", "Rivers \ud800.", "--nla", str(w["nla"]), "--model",
                                                          str(w["model"]), "--out", str(w["root"] / "new-trace"),
                                                          "--device", "cpu"]
CASES["trace/--chat with an unknown role"] = lambda w: ["trace", "--chat", str(w["chat_wizard"]), "--nla",
                                                          str(w["nla"]), "--out", str(w["root"] / "new-trace")]
CASES["explain/--min-position -1"] = lambda w: ["explain", "Rivers.", "--nla", str(w["nla"]), "--min-position", "-1"]
CASES["explain/--max-new-tokens 0"] = lambda w: ["explain", "Rivers.", "--nla", str(w["nla"]),
                                                 "--max-new-tokens", "0"]
CASES["explain/--model nosuch/model"] = lambda w: ["explain", "Rivers.", "--nla", str(w["nla"]), "--model",
                                                   "nosuch/model", "--device", "cpu"]
CASES["explain/--positions x"] = lambda w: ["explain", "Rivers.", "--nla", str(w["nla"]), "--positions", "x"]
CASES["explain/--positions past the text"] = lambda w: ["explain", "Rivers.", "--nla", str(w["nla"]), "--model",
                                                        str(w["model"]), "--positions", "99", "--device", "cpu"]
CASES["info/--nla unknown"] = lambda w: ["info", "--nla", str(w["root"] / "nosuch")]
CASES["explain-data/--salient-words -1"] = lambda w: ["explain-data", "--dataset", str(w["acts"]), "--salient-words",
                                                      "-1", "--out", str(w["root"] / "new-explained")]
CASES["train-av/--init-from a folder with no AV"] = lambda w: ["train-av", "--data", str(w["pairs"]), "--out",
                                                               str(w["root"] / "new-av"), "--init-from",
                                                               str(w["acts"]), "--model", str(w["model"])]
CASES["train-ar/--init-from a folder with no AR"] = lambda w: ["train-ar", "--data", str(w["pairs"]), "--out",
                                                               str(w["root"] / "new-ar"), "--init-from",
                                                               str(w["acts"]), "--model", str(w["model"])]
def expert(nla: str = "lora_nla", data: str = "pairs", *extra: str, out: str | None = None):
    return lambda w: ["expert", "--nla", str(w[nla]), "--data", str(w[data]), "--out",
                      str(w[out] if out else w["root"] / "new-expert"), "--device", "cpu", "--rows", "2",
                      "--rounds", "1", *extra]


for bad in ("not_parquet", "missing", "layer2", "heldout"):
    CASES[f"expert/--data {bad}"] = expert(data=bad)
CASES["expert/--nla without LoRA adapters"] = expert("nla")
CASES["expert/--rows more than the data holds"] = expert("lora_nla", "pairs", "--rows", "100000")
CASES["expert/--samples 0"] = expert("lora_nla", "pairs", "--samples", "0")
CASES["expert/--out is the NLA"] = expert(out="lora_nla")


def steering(*args):
    return lambda w: ["steer", "Rivers carry water.", "--nla", str(w["nla"]), "--model", str(w["model"]), "--out",
                      str(w["root"] / "new-steer"), "--device", "cpu", *args]


CASES["steer/--edit without =>"] = steering("--edit", "rivers")
CASES["steer/--alpha out of range"] = steering("--edit", "a=>b", "--alpha", "0.5,40")
CASES["steer/text past the context"] = steering("--edit", "a=>b", "--max-new-tokens", "5000")
CASES["steer/a token whose explanation failed"] = steering("--edit", "a=>b", "--max-new-tokens", "2")
CASES["steer/--explanation-file missing"] = steering("--explanation-file", "nowhere.txt")
CASES["eval/--rewrite-backend without --robustness"] = lambda w: [*evaluate()(w), "--rewrite-backend", "openai"]
CASES["eval/--rewrite-backend with no key"] = lambda w: [*evaluate()(w), "--robustness", "--rewrite-backend",
                                                         "openai", "--api-key-env", "NLA_NO_SUCH_KEY"]
for bad in ("rl_cut", "rl_empty", "rl_foreign", "missing"):
    CASES[f"plot/{bad}"] = lambda w, b=bad: ["plot", str(w[b])]
CASES["export/cut adapter"] = lambda w: ["export", str(w["lora_cut"]), "--out", str(w["root"] / "new-export")]
CASES["export/--out is a file"] = lambda w: ["export", str(w["lora_cut"]), "--out", str(w["file"])]
CASES["info/--model nosuch/model"] = lambda w: ["info", "--model", "nosuch/model"]
CASES["info/--model with cut weights"] = lambda w: ["info", "--model", str(w["model_cut"]), "--device", "cpu"]
CASES["extract/--model nosuch/model"] = lambda w: ["extract", "--model", "nosuch/model", "--out",
                                                   str(w["root"] / "new-acts")]
CASES["extract/--out is a file"] = lambda w: ["extract", "--out", str(w["file"]), "--model", str(w["model"])]
CASES["extract/--max-doc-tokens past the context"] = lambda w: [
    "extract", "--out", str(w["root"] / "new-acts"), "--model", str(w["model"]), "--corpus",
    str(w["root"] / "corpus.txt"), "--max-doc-tokens", "5000", "--device", "cpu"]
CASES["calibrate/--max-rows -1"] = lambda w: ["calibrate", "--nla", str(w["nla"]), "--max-rows", "-1"]
CASES["explain/--max-tokens 0"] = lambda w: ["explain", "Rivers.", "--nla", str(w["nla"]), "--max-tokens", "0"]
for bad in ("config_yaml", "config_binary", "config_key", "config_type"):
    CASES[f"train/--config {bad}"] = lambda w, b=bad: ["train", "--config", str(w[b]), "--out",
                                                       str(w["root"] / "new-train")]
CASES["train/--out is a file"] = lambda w: ["train", "--preset", "smollm2-135m", "--out", str(w["file"])]
CASES["demo/--out is a file"] = lambda w: ["demo", "--out", str(w["file"])]
CASES["serve/--traces not a folder"] = lambda w: ["serve", "--nla", str(w["nla"]), "--traces", str(w["file"])]
CASES["serve/--port 0"] = lambda w: ["serve", "--nla", str(w["nla"]), "--port", "0"]
CASES["trace/--nla nla_av_cut"] = lambda w: ["trace", "Rivers.", "--nla", str(w["nla_av_cut"]), "--out",
                                             str(w["root"] / "new-trace"), "--device", "cpu"]



def index_args(*extra: str, out: str = ""):
    return lambda w: ["index", "--corpus", str(w["corpus"]), "--out", str(w[out] if out else w["root"] / "new-index"),
                      "--nla", str(w["nla"]), "--model", str(w["model"]), "--device", "cpu", *extra]


CASES["index/--positions 0"] = index_args("--positions", "0")
CASES["index/--roles wizard"] = index_args("--roles", "wizard")
CASES["index/--roles assistant on a corpus with no chats"] = index_args("--roles", "assistant")
CASES["index/--explain some"] = index_args("--explain", "some")
CASES["index/--out is a file"] = index_args(out="file")
CASES["index/finished index, same settings"] = index_args("--positions", "2", out="index")
CASES["index/unfinished index, other settings"] = index_args("--positions", "3", out="index_unfinished")
CASES["search/not an index"] = lambda w: ["search", str(w["acts"]), "rivers", "--device", "cpu"]
CASES["search/damaged store"] = lambda w: ["search", str(w["index_cut"]), "rivers", "--device", "cpu"]
CASES["search/half-written index"] = lambda w: ["search", str(w["index_unfinished"]), "rivers", "--device", "cpu"]
CASES["search/index of another NLA"] = lambda w: ["search", str(w["index_other_nla"]), "rivers", "--device", "cpu"]
CASES["search/empty query"] = lambda w: ["search", str(w["index"]), " ", "--device", "cpu"]
CASES["search/query past the AR's context"] = lambda w: ["search", str(w["index"]), "river " * 1500, "--device",
                                                         "cpu"]
CASES["search/--by text on an activations-only index"] = lambda w: ["search", str(w["index"]), "rivers", "--by",
                                                                    "text"]
CASES["search/--by words"] = lambda w: ["search", str(w["index"]), "rivers", "--by", "words"]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file's sha256 and every folder, by path: any file written, changed or removed shows."""
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            state[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "nla-cache"))
    monkeypatch.delenv("NLA_DEBUG", raising=False)


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_exit_2_and_changes_nothing(case, world, offline, monkeypatch):
    monkeypatch.chdir(world["root"])  # a stray relative write would land in the hashed tree
    args = CASES[case](world)
    before = snapshot(world["root"], world["model"])
    result = CliRunner().invoke(app, args)
    assert "Traceback" not in result.output, (case, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (case, repr(result.exception))
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case, result.output)
    assert snapshot(world["root"], world["model"]) == before, case


def test_the_sweep_covers_every_command_that_reads_user_files():
    commands = {case.split("/")[0] for case in CASES}
    assert commands == {"train-ar", "train-av", "expert", "eval", "rl", "calibrate", "explain-data", "explain", "plot",
                        "export", "info", "extract", "trace", "train", "demo", "serve", "index", "search", "steer"}
    assert len(CASES) >= 70


@pytest.mark.parametrize("case", ["eval/--data truncated", "train-av/--layer 99"])
def test_no_traceback_reaches_a_terminal(case, world, tmp_path):
    """The same as above in a fresh process: what a user's terminal shows is the one line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(SRC),
           "OMP_NUM_THREADS": "1"}
    env.pop("NLA_DEBUG", None)
    before = snapshot(world["root"])
    done = subprocess.run([sys.executable, "-m", "nla.cli", *CASES[case](world)], capture_output=True, text=True,
                          env=env, cwd=world["root"], timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1:] == done.stderr.strip().splitlines(), done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert snapshot(world["root"]) == before
