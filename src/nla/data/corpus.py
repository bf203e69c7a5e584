"""Corpora: the embedded default and user files, as a list of labelled documents.

    load_corpus("default")                       # shipped with nla, no network
    load_corpus("default+personas")              # the same, half its chats under a varied system prompt
    load_corpus("notes.txt")                     # documents separated by blank lines
    load_corpus("chats.jsonl", text_field="text")   # a string, or a list of {role, content} messages
    load_corpus("web.parquet", text_field="text")
    load_corpus("hf:wikitext:wikitext-2-raw-v1@train")   # a Hugging Face dataset (needs the hub)

A document is either plain text or a chat transcript; transcripts are rendered with
the target's own chat template when activations are extracted.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from nla.data.personas import with_personas
from nla.errors import NLAError

DEFAULT_CORPUS = "default"
PERSONAS_CORPUS = "default+personas"
_LABELS = ("source", "genre", "topic")


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str | None = None
    messages: tuple[dict, ...] | None = None
    source: str = ""
    genre: str = ""
    topic: str = ""

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


def document_text(doc: Document) -> str:
    """A document's own words: its text, or its messages' contents one after another (no chat template)."""
    return doc.text if doc.text is not None else "\n".join(m["content"] for m in doc.messages)


def default_corpus_path() -> Path:
    return Path(str(files("nla.data").joinpath("default_corpus.jsonl.gz")))


def _record_to_document(record: dict, text_field: str, fallback_id: str, fallback_source: str, where: str) -> Document:
    value = record.get(text_field)
    if value is None and "messages" in record and text_field == "text":
        value = record["messages"]
    if value is None:
        raise NLAError(f"{where} has no field '{text_field}'; name the text field with --text-field")
    labels = {k: str(record.get(k) or "") for k in _LABELS}
    labels["source"] = labels["source"] or fallback_source
    doc_id = str(record.get("id") or record.get("doc_id") or fallback_id)
    if isinstance(value, str):
        return Document(doc_id=doc_id, text=value, **labels)
    if isinstance(value, list) and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
        messages = tuple({"role": m["role"], "content": m["content"]} for m in value)
        return Document(doc_id=doc_id, messages=messages, **labels)
    raise NLAError(f"{where}: field '{text_field}' must be a string or a list of {{role, content}} messages")


def read_utf8(path: Path, opener=open) -> str:
    try:
        with opener(path, "rb") as f:
            data = f.read()
        return data.decode("utf-8")
    except (OSError, EOFError) as err:  # e.g. a truncated or corrupt .gz
        raise NLAError(f"cannot read {path} ({err}); the file is damaged, restore or regenerate it") from err
    except UnicodeDecodeError as err:
        raise NLAError(
            f"{path} is not valid UTF-8 (byte {err.start}); re-encode it, e.g. iconv -f latin1 -t utf-8"
        ) from err


def _load_jsonl(path: Path, text_field: str, opener=open) -> list[Document]:
    docs = []
    for lineno, line in enumerate(read_utf8(path, opener).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise NLAError(f"line {lineno} of {path} is not valid JSON ({err.msg}); fix or remove that line") from err
        if not isinstance(record, dict):
            raise NLAError(f"line {lineno} of {path} is a JSON {type(record).__name__}, not an object; "
                           "write one {\"text\": ...} object per line")
        docs.append(_record_to_document(record, text_field, f"{path.stem}:{lineno}", path.stem,
                                        f"line {lineno} of {path}"))
    return docs


def _load_txt(path: Path) -> list[Document]:
    text = read_utf8(path).replace("\r\n", "\n")
    paragraphs = [p.strip() for p in text.split("\n\n")]
    return [Document(doc_id=f"{path.stem}:{i}", text=p, source=path.stem) for i, p in enumerate(paragraphs) if p]


def _load_parquet(path: Path, text_field: str) -> list[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise NLAError(f"cannot read {path} as parquet ({str(err).splitlines()[0]}); check the file") from err
    if text_field not in table.column_names:
        raise NLAError(
            f"{path} has no column '{text_field}' (columns: {', '.join(table.column_names)}); "
            "name the text column with --text-field"
        )
    return [_record_to_document(r, text_field, f"{path.stem}:{i}", path.stem, f"row {i} of {path}")
            for i, r in enumerate(table.to_pylist())]


def _load_hf(spec: str, text_field: str, limit: int | None) -> list[Document]:
    try:
        import datasets
    except ImportError as err:
        raise NLAError("Hugging Face datasets need the hub extra; run: pip install 'nla[hub]'") from err
    name, _, split = spec.removeprefix("hf:").partition("@")
    name, _, config = name.partition(":")
    split = split or "train"
    if limit is not None and "[" not in split:
        split = f"{split}[:{limit}]"  # read only what --max-docs keeps
    try:
        data = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # the hub raises many types; the message is what matters
        raise NLAError(f"could not load dataset '{name}' ({str(err).splitlines()[0]}); "
                       "check the name and network") from err
    return [_record_to_document(r, text_field, f"{name}:{i}", name, f"row {i} of {name}") for i, r in enumerate(data)]


def load_corpus(spec: str = DEFAULT_CORPUS, *, text_field: str = "text", limit: int | None = None) -> list[Document]:
    """Load documents from the default corpus, a file or a hub dataset; `limit` keeps the first N."""
    if spec in (DEFAULT_CORPUS, PERSONAS_CORPUS):
        if not default_corpus_path().exists():
            raise NLAError(f"the embedded corpus {default_corpus_path()} is missing; reinstall nla, "
                           "or rebuild it with nla build-corpus")
        docs = _load_jsonl(default_corpus_path(), "text", opener=gzip.open)
        docs = with_personas(docs) if spec == PERSONAS_CORPUS else docs
    elif spec.startswith("hf:"):
        docs = _load_hf(spec, text_field, limit)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise NLAError(f"corpus {spec} not found; pass 'default', a .txt/.jsonl/.parquet file, or hf:NAME")
        loaders = {".txt": _load_txt, ".jsonl": lambda p: _load_jsonl(p, text_field),
                   ".parquet": lambda p: _load_parquet(p, text_field)}
        if path.suffix not in loaders:
            raise NLAError(f"corpus {path} has an unknown type '{path.suffix}'; use .txt, .jsonl or .parquet")
        docs = loaders[path.suffix](path)
    docs = docs[:limit] if limit is not None else docs
    if not docs:
        raise NLAError(f"corpus {spec} has no documents; check the file, or use --corpus default")
    ids = [d.doc_id for d in docs]
    if len(set(ids)) != len(ids):
        raise NLAError(f"corpus {spec} has duplicate document ids; ids must be unique (they key the splits)")
    return docs
