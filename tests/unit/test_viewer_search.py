"""nla serve --index: /api/search and /api/search/reading answer like nla search, with the same JSON errors."""

import dataclasses

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import build_tiny_nla  # noqa: E402
from nla.errors import NLAError  # noqa: E402
from nla.reading.config import IndexSettings  # noqa: E402
from nla.reading.index import build_index  # noqa: E402
from nla.reading.index_store import open_index  # noqa: E402
from nla.reading.search import SearchQuery, search  # noqa: E402
from nla.viewer.app import create_app  # noqa: E402
from reading_helpers import scripted_reader  # noqa: E402


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("serve-index")
    patch = pytest.MonkeyPatch()
    patch.setenv("NLA_CACHE_DIR", str(root / "cache"))
    reader = scripted_reader(build_tiny_nla(root / "nla", tiny_llama), tiny_llama)
    corpus = root / "corpus.txt"
    corpus.write_text("Rivers carry water to the sea.\n\nBread rises in a warm oven overnight.\n\n"
                      "Music fills the hall when the orchestra plays.")
    build_index(reader, IndexSettings(corpus=str(corpus), explain="2"), root / "index", progress=False)
    index = open_index(root / "index")
    yield reader, index, root
    index.close()
    patch.undo()


@pytest.fixture(scope="module")
def client(indexed):
    reader, index, root = indexed
    return TestClient(create_app(reader, root, index=index), base_url="http://127.0.0.1:8000",
                      raise_server_exceptions=False)


def test_the_api_answers_as_the_library_does(client, indexed):
    reader, index, _ = indexed
    answer = client.post("/api/search", json={"query": "geography", "k": 5})
    assert answer.status_code == 200
    assert answer.json() == search(index, reader.nla, SearchQuery(query="geography", k=5))
    docs = client.post("/api/search", json={"query": "water", "docs": True, "by": "activation"}).json()
    assert len(docs["hits"]) == 3 and all("positions" in h for h in docs["hits"])


def test_a_hit_opens_the_reading_of_its_stored_activation(client):
    hit = client.post("/api/search", json={"query": "rivers", "by": "activation", "k": 1}).json()["hits"][0]
    opened = client.post("/api/search/reading", json={"row": hit["row"]})
    assert opened.status_code == 200
    body = opened.json()
    assert body["stored"]["doc_id"] == hit["doc_id"] and body["reading"]["position"] == hit["position"]
    assert body["reading"]["status"] in ("ok", "failed") and "claims" in body["reading"]


@pytest.mark.parametrize("payload, status, words", [
    ({"query": ""}, 422, "query"),
    ({"query": "x", "k": 1000}, 422, "k"),
    ({"query": "x", "by": "words"}, 400, "choose text, activation or both"),
    ({"query": "x", "filters": {"colour": "red"}}, 400, "cannot filter on colour"),
    ({"query": "x", "unknown": 1}, 422, "unknown"),
])
def test_bad_searches_are_json_errors(client, payload, status, words):
    answer = client.post("/api/search", json=payload)
    assert answer.status_code == status and words in answer.json()["error"]
    assert client.post("/api/search/reading", json={"row": 10**6}).status_code == 400


def test_without_an_index_search_names_the_flag(indexed):
    reader, _, root = indexed
    bare = TestClient(create_app(reader, root), base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    answer = bare.post("/api/search", json={"query": "rivers"})
    assert answer.status_code == 404 and "nla serve --index" in answer.json()["error"]
    assert bare.get("/search").status_code == 200


def test_an_index_of_another_nla_is_refused_at_start(indexed, tmp_path, tiny_llama):
    _, index, root = indexed
    other = scripted_reader(build_tiny_nla(tmp_path / "other", tiny_llama), tiny_llama)
    other.nla.av_meta = dataclasses.replace(other.nla.av_meta, created_at="2001-01-01T00:00:00+00:00")  # not the same
    with pytest.raises(NLAError, match="was made with another NLA"):
        create_app(other, root, index=index)
