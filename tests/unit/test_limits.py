"""Limits stated up front: a text past the target's context or --max-tokens is refused with its length and
the limit, long readings show progress, and a training batch that clearly does not fit in memory is refused
before anything is written."""

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny_nla, write_toy_pairs
from nla.autoencoder.nla import NLA
from nla.cli import app
from nla.errors import NLAError
from nla.models import load_target, memory
from nla.reading.transcript import explain_text
from nla.train.ar import train_ar
from nla.train.av import train_av
from nla.train.config import ARTrainConfig, AVTrainConfig

WORDS = ["river", "bread", "music", "stone"]
LONG = "Rivers carry water to the sea. " * 200  # past the tiny models' context of 1,024 tokens


@pytest.fixture(scope="module")
def tiny_nla(tmp_path_factory, tiny_llama):
    return build_tiny_nla(tmp_path_factory.mktemp("limits") / "nla", tiny_llama)


def test_a_text_past_the_context_is_refused_with_its_length_and_the_limit(tiny_nla, tiny_llama, monkeypatch):
    nla = NLA.load(tiny_nla)
    target = load_target(str(tiny_llama))
    monkeypatch.setattr(nla, "activations", lambda *a: pytest.fail("the model ran"))
    tokens = len(target.encode(LONG))
    with pytest.raises(NLAError, match=f"the text has {tokens} tokens, more than the 1024 of .*'s context; "
                                       "shorten it"):
        explain_text(nla, LONG, target=target)
    with pytest.raises(NLAError, match=r"the text has \d+ tokens, more than --max-tokens 5 .* raise --max-tokens"):
        explain_text(nla, "Rivers carry water to the sea.", target=target, max_tokens=5)


def test_explain_refuses_past_its_max_tokens_default_in_one_line(tiny_nla, tiny_llama):
    text = "Rivers carry water to the sea. " * 40  # within the context (1,024), past the default of 512
    result = CliRunner().invoke(app, ["explain", text, "--nla", str(tiny_nla), "--model", str(tiny_llama)])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: the text has ") and "more than --max-tokens 512" in line


def test_a_reading_of_several_batches_shows_progress(tiny_nla, tiny_llama, capsys):
    readings = explain_text(NLA.load(tiny_nla), "Rivers carry water to the sea.", target=load_target(str(tiny_llama)),
                            max_new_tokens=2, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "explain: 100%" in err and f"{len(readings)}/{len(readings)}" in err


def test_the_memory_check_names_the_flag_and_what_would_fit(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 10e9)
    memory.check_batch_fits(1e9, 9, 0.5e9, "cpu", flag="--batch-size", what="x")  # 9.5 GB: fits
    with pytest.raises(NLAError) as refused:
        memory.check_batch_fits(1e9, 12, 0.5e9, "cpu", flag="--batch-size", what="rows of 100 tokens")
    assert str(refused.value) == ("--batch-size 12 needs about 12.5 GB per step (rows of 100 tokens), but 10.0 GB is "
                                  "free on cpu; lower --batch-size to 9 or less, or a machine with more memory")
    with pytest.raises(NLAError, match="even one row does not fit"):
        memory.check_batch_fits(20e9, 1, 0, "cpu", flag="--batch-size", what="x")
    monkeypatch.setattr(memory, "available_memory", lambda device: None)  # unknown: nothing is refused
    memory.check_batch_fits(1e12, 100, 0, "cpu", flag="--batch-size", what="x")


def test_this_machine_reports_its_free_memory():
    assert memory.available_memory(torch.device("cpu")) > 0


@pytest.mark.parametrize("stage", ["ar", "av"])
def test_sft_refuses_a_batch_that_does_not_fit_before_writing_anything(tmp_path, tiny_llama, monkeypatch, stage):
    data, _, _ = write_toy_pairs(tmp_path / "pairs.parquet", WORDS, 16, 0.3, "about {word}")
    monkeypatch.setattr(memory, "available_memory", lambda device: 5e6)  # 5 MB free
    cfg = dict(data=data, out=tmp_path / "run", model=str(tiny_llama), layer=1, lora_rank=4, batch_size=64)
    with pytest.raises(NLAError, match=r"^--batch-size 64 needs about [\d.]+ MB per step \(.*\), but 5.0 MB is "
                                       r"free on cpu; lower --batch-size to \d+ or less"):
        if stage == "ar":
            train_ar(ARTrainConfig(**cfg), progress=False)
        else:
            train_av(AVTrainConfig(**cfg), progress=False)
    assert not (tmp_path / "run").exists()


def test_sft_estimate_grows_with_the_batch(tmp_path, tiny_llama, monkeypatch):
    """The refusal is about the batch: the same run with a batch that fits in the same memory starts."""
    data, _, _ = write_toy_pairs(tmp_path / "pairs.parquet", WORDS, 16, 0.3, "about {word}")
    needs = []
    monkeypatch.setattr(memory, "available_memory", lambda device: None)
    real = memory.check_batch_fits

    def record(per_row, rows, fixed, device, **kwargs):
        needs.append(fixed + per_row * rows)
        return real(per_row, rows, fixed, device, **kwargs)

    monkeypatch.setattr("nla.train.av.check_batch_fits", record)
    for batch_size in (2, 8):
        train_av(AVTrainConfig(data=data, out=tmp_path / f"run{batch_size}", model=str(tiny_llama), layer=1,
                               lora_rank=4, batch_size=batch_size, epochs=0.2), progress=False)
    assert needs[1] > 2 * needs[0] > 0


def test_the_av_guard_counts_logits_only_where_the_loss_computes_them(tmp_path, tiny_llama, monkeypatch):
    """response_logits computes the vocabulary logits at the answer's positions only: memory that holds those
    but not the prompt's as well trains (the guard once counted every position, and refused this batch)."""
    data, _, _ = write_toy_pairs(tmp_path / "pairs.parquet", WORDS, 16, 0.3, "about {word}")
    seen = {}
    real = memory.check_batch_fits
    monkeypatch.setattr("nla.train.av.check_batch_fits", lambda per_row, rows, fixed, device, **kw: seen.update(
        per_row=per_row, rows=rows, fixed=fixed, what=kw["what"]))
    cfg = dict(data=data, model=str(tiny_llama), layer=1, lora_rank=4, batch_size=8, epochs=0.2)
    train_av(AVTrainConfig(out=tmp_path / "probe", **cfg), progress=False)
    longest, answer = (int(n) for n in re.findall(r"\d+", seen["what"])[:2])
    config = load_target(str(tiny_llama)).config
    prompt_logits = memory.logit_bytes(config, longest, backward=True) - memory.logit_bytes(config, answer + 1,
                                                                                            backward=True)
    need = seen["fixed"] + seen["per_row"] * seen["rows"]
    free = need + prompt_logits * seen["rows"] / 2  # room for the answer's logits, not for the prompt's too
    monkeypatch.setattr("nla.train.av.check_batch_fits", real)
    monkeypatch.setattr(memory, "available_memory", lambda device: free)
    result = train_av(AVTrainConfig(out=tmp_path / "run", **cfg), progress=False)
    assert result["steps"] > 0 and Path(result["out"]).exists()
