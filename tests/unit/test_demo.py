"""nla demo with an NLA: every built-in text traced, printed token by token, and written as offline pages."""

from conftest import build_tiny_nla
from nla.reading import demo
from reading_helpers import scripted_reader


def test_the_demo_traces_each_text_and_links_the_pages(tmp_path, tiny_llama, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    folder = build_tiny_nla(tmp_path / "nla", tiny_llama)
    reader = scripted_reader(folder, tiny_llama)
    monkeypatch.setattr("nla.reading.trace.Reader.load", classmethod(lambda cls, nla, **kw: reader))
    lines = []
    results = demo.run_demo(tmp_path / "out", nla=folder, echo=lines.append)
    assert list(results) == list(demo.TEXTS)
    printed = "\n".join(lines)
    assert demo.MEANING in printed and "explanations can still be wrong" in printed
    index = (tmp_path / "out" / "index.html").read_text()
    for name, trace in results.items():
        assert f"href='{name}/trace.html'" in index and (tmp_path / "out" / name / "trace.html").exists()
        traced = [t for t in trace["tokens"] if t["traced"]]
        assert 0 < len(traced) <= demo.EXPLAINED_TOKENS  # only the last tokens are explained: the demo stays short
        assert all(demo.token_line(t).strip() in printed for t in traced)
    assert "http" not in index  # the pages open offline
