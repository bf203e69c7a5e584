"""The README's Python section runs as written, on a tiny NLA standing in for runs/nla."""

import re
from pathlib import Path

from conftest import build_tiny_nla
from test_nla_checkpoint import edit_sidecar

from nla.autoencoder.meta import META_FILE

README = Path(__file__).parents[2] / "README.md"


def python_section() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the Python section should hold one runnable block"
    return blocks[0]


def test_the_python_section_runs(tmp_path, tiny_llama, monkeypatch, capsys):
    nla = build_tiny_nla(tmp_path / "runs" / "nla", tiny_llama)
    for role in ("av", "ar"):  # its target is the tiny model, as a real NLA's is the model it was trained on
        edit_sidecar(nla / role / META_FILE, base_checkpoint=str(tiny_llama))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    namespace = {}
    exec(compile(python_section(), str(README), "exec"), namespace)
    tokens = len(namespace["ids"])
    assert namespace["vectors"].shape == (tokens, 32) and len(namespace["labels"]) == tokens
    printed = capsys.readouterr().out
    assert len(namespace["trace"]["tokens"]) == tokens
    assert all(f"{t['token']!r} {t['label']} " in printed for t in namespace["trace"]["tokens"])
