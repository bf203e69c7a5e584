"""The README's Python section runs: on a tiny NLA standing in for the shipped one (fast), and as written, on the
shipped NLA, the way a fresh clone runs it (marker `real`)."""

import re
from pathlib import Path

import pytest
from test_nla_checkpoint import edit_sidecar

from conftest import build_tiny_nla
from nla.autoencoder.meta import META_FILE

README = Path(__file__).parents[2] / "README.md"


def python_section() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the Python section should hold one runnable block"
    return blocks[0]


@pytest.mark.slow  # the README's whole Python block: every reading of a text, calibration included
def test_the_python_section_runs(tmp_path, tiny_llama, monkeypatch, capsys):
    nla = build_tiny_nla(tmp_path / "runs" / "nla", tiny_llama)
    for role in ("av", "ar"):  # its target is the tiny model, as a real NLA's is the model it was trained on
        edit_sidecar(nla / role / META_FILE, base_checkpoint=str(tiny_llama))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    namespace = {}
    code = python_section().replace('Reader.load("default")', 'Reader.load("runs/nla")')  # the tiny stand-in
    exec(compile(code, str(README), "exec"), namespace)
    tokens = len(namespace["ids"])
    assert namespace["vectors"].shape == (tokens, 32) and len(namespace["labels"]) == tokens
    printed = capsys.readouterr().out
    assert len(namespace["trace"].tokens) == tokens
    assert all(f"{t.token!r} {t.label} {t.score} " in printed for t in namespace["trace"].tokens)


@pytest.mark.real
def test_the_python_section_runs_as_written_on_the_shipped_nla(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a fresh clone has no runs/ folder: the block must not need one
    namespace = {}
    exec(compile(python_section(), str(README), "exec"), namespace)
    assert namespace["reader"].nla.layer == 20 and len(namespace["labels"]) == len(namespace["ids"])
    assert all(t.label in ("High", "Medium", "Low", "failed") for t in namespace["trace"].traced)
