import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nla.data.corpus import load_corpus
from nla.errors import NLAError


def test_txt_documents_are_blank_line_separated(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First document\nstill first.\n\n\nSecond document.\n", encoding="utf-8")
    docs = load_corpus(str(path))
    assert [d.text for d in docs] == ["First document\nstill first.", "Second document."]
    assert docs[0].doc_id == "notes:0" and docs[0].source == "notes"


def test_jsonl_with_text_messages_and_labels(tmp_path):
    path = tmp_path / "mix.jsonl"
    rows = [{"id": "a", "body": "plain text", "genre": "news", "topic": "sport"},
            {"body": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = load_corpus(str(path), text_field="body")
    assert docs[0].doc_id == "a" and docs[0].genre == "news" and docs[0].topic == "sport" and not docs[0].is_chat
    assert docs[1].is_chat and docs[1].messages[1]["content"] == "yo" and docs[1].doc_id == "mix:2"


def test_parquet_column(tmp_path):
    path = tmp_path / "web.parquet"
    pq.write_table(pa.table({"content": ["one doc", "two doc"], "source": ["w", "w"]}), path)
    docs = load_corpus(str(path), text_field="content")
    assert [d.text for d in docs] == ["one doc", "two doc"] and docs[1].source == "w"
    with pytest.raises(NLAError, match="no column 'text'.*--text-field"):
        load_corpus(str(path))


def test_limit_keeps_the_first_documents(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a\n\nb\n\nc", encoding="utf-8")
    assert [d.text for d in load_corpus(str(path), limit=2)] == ["a", "b"]


@pytest.mark.parametrize("name,content,message", [
    ("latin.txt", "caf\xe9 au lait".encode("latin-1"), "not valid UTF-8 \\(byte 3\\).*iconv"),
    ("empty.txt", b"\n\n  \n", "has no documents"),
    ("bad.jsonl", b'{"text": "ok"}\n{oops\n', "line 2 of .* is not valid JSON"),
    ("nofield.jsonl", b'{"body": "x"}\n', "has no field 'text'.*--text-field"),
    ("dupes.jsonl", b'{"id": 1, "text": "x"}\n{"id": 1, "text": "y"}\n', "duplicate document ids"),
    ("table.csv", b"a,b\n", "unknown type '.csv'"),
    ("list.jsonl", b'["not", "an", "object"]\n', "is a JSON list, not an object"),
    ("broken.parquet", b"PAR1 this is not parquet", "cannot read .* as parquet"),
])
def test_bad_corpora_get_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(NLAError, match=message) as err:
        load_corpus(str(path))
    assert "\n" not in str(err.value)


def test_missing_corpus_names_the_choices():
    with pytest.raises(NLAError, match="corpus nope.jsonl not found; pass 'default'"):
        load_corpus("nope.jsonl")


def test_default_corpus_is_large_diverse_and_labelled():
    docs = load_corpus("default")
    assert len(docs) >= 3000
    assert all(d.source and d.genre and d.topic for d in docs)
    sources = {d.source for d in docs}
    assert {"smollm2-chat", "smollm2-prose", "python-docs"} <= sources
    assert len({d.genre for d in docs}) >= 20 and len({d.topic for d in docs}) >= 15
    chats = [d for d in docs if d.is_chat]
    assert len(chats) >= 800 and all(m["content"].strip() for d in chats for m in d.messages)
    # Shuffled when built, so any prefix (as `--max-docs` takes) mixes sources.
    assert len({d.source for d in docs[:100]}) >= 3


def test_hub_dataset_spec_is_parsed_and_rows_become_documents(monkeypatch):
    """The hub is unreachable here, so a stand-in `datasets` module records the call."""
    import sys
    import types

    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"text": "first row"}, {"text": "second row", "genre": "wiki"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    docs = load_corpus("hf:wikitext:wikitext-2-raw-v1@validation")
    assert calls == [("wikitext", "wikitext-2-raw-v1", "validation")]
    load_corpus("hf:wikitext:wikitext-2-raw-v1", limit=1)
    assert calls[-1] == ("wikitext", "wikitext-2-raw-v1", "train[:1]")
    assert [d.text for d in docs] == ["first row", "second row"] and docs[1].genre == "wiki"
    assert docs[0].doc_id == "wikitext:0" and docs[0].source == "wikitext"
    load_corpus("hf:someone/corpus")
    assert calls[-1] == ("someone/corpus", None, "train")
