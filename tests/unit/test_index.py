"""nla index and nla search on a tiny NLA: what is stored, resuming after a kill, refusals, and the two signals
checked against a direct computation."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny_nla
from nla.cli import app
from nla.data.corpus import load_corpus
from nla.data.extract import encode_document
from nla.errors import NLAError
from nla.reading import index_store
from nla.reading.config import IndexSettings
from nla.reading.index import build_index, load_index_reader, plan_document
from nla.reading.index_store import ACTIVATIONS, DONE_JSON, open_index, shard_name
from nla.reading.search import SearchQuery, search
from reading_helpers import scripted_reader

SHARD = shard_name(0, 1)


@pytest.fixture(scope="module")
def tiny_nla(tmp_path_factory, tiny_llama):
    return build_tiny_nla(tmp_path_factory.mktemp("index") / "nla", tiny_llama)


@pytest.fixture()
def reader(tiny_nla, tiny_llama):
    return load_index_reader(tiny_nla, IndexSettings(), model=str(tiny_llama))


def _rows(folder):
    index = open_index(folder)
    db = index.shards[0].db
    rows = db.execute("SELECT doc_id, position, role, token FROM positions ORDER BY id").fetchall()
    vectors = np.asarray(index.shards[0].vectors).copy()
    index.close()
    return rows, vectors


def test_the_index_stores_each_position_with_its_activation(reader, small_corpus, tmp_path):
    settings = IndexSettings(corpus=str(small_corpus), positions="3")
    result = build_index(reader, settings, tmp_path / "idx", progress=False)
    rows, vectors = _rows(tmp_path / "idx")
    assert result["rows"] == len(rows) == len(vectors) > 0
    assert all(len([r for r in rows if r[0] == d]) <= 3 for d in {r[0] for r in rows})
    doc = load_corpus(str(small_corpus))[1]
    ids = encode_document(reader.target, doc, settings.max_doc_tokens)
    expected = reader.nla.activations(ids, reader.target)
    for (doc_id, position, role, token), vector in zip(rows, vectors):
        if doc_id == doc.doc_id:
            assert role == "text" and token == reader.target.tokenizer.decode([ids[position]])
            assert torch.allclose(torch.from_numpy(vector).float(), expected[position], atol=1e-2, rtol=1e-2)
    settings_json = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert settings_json["layer"] == reader.nla.layer and settings_json["positions"] == "3"


def test_roles_choose_the_chat_tokens_indexed(reader, small_corpus, tmp_path):
    build_index(reader, IndexSettings(corpus=str(small_corpus), roles=("assistant",)), tmp_path / "idx",
                progress=False)
    rows, _ = _rows(tmp_path / "idx")
    assert rows and {r[2] for r in rows} == {"assistant"}
    doc = next(d for d in load_corpus(str(small_corpus)) if d.is_chat)
    plan = plan_document(reader, doc, IndexSettings(roles=("assistant",)))
    text = reader.target.tokenizer.decode([plan.ids[p] for p in plan.positions])
    assert text.strip().startswith(doc.messages[1]["content"][:10].strip())


def test_a_kill_mid_chunk_loses_and_duplicates_nothing(reader, small_corpus, tmp_path, monkeypatch):
    settings = IndexSettings(corpus=str(small_corpus), positions="4")
    build_index(reader, settings, tmp_path / "whole", progress=False)
    real, calls = index_store.ShardWriter.commit, []

    def dies_on_the_second_chunk(self, doc_ids, rows, vectors):
        calls.append(1)
        if len(calls) == 2:  # the vectors reach the disk, the rows never do
            with (self.folder / ACTIVATIONS).open("ab") as f:
                f.write(np.asarray(vectors, dtype=np.float16).tobytes())
            raise KeyboardInterrupt
        return real(self, doc_ids, rows, vectors)

    monkeypatch.setattr(index_store.ShardWriter, "commit", dies_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_index(reader, settings, tmp_path / "killed", progress=False)
    monkeypatch.setattr(index_store.ShardWriter, "commit", real)
    with pytest.raises(NLAError, match="is unfinished"):
        open_index(tmp_path / "killed")
    build_index(reader, settings, tmp_path / "killed", progress=False)  # the same command resumes
    whole, killed = _rows(tmp_path / "whole"), _rows(tmp_path / "killed")
    assert sorted(whole[0]) == sorted(killed[0])
    order_w = np.argsort([f"{r[0]}|{r[1]:05d}" for r in whole[0]])
    order_k = np.argsort([f"{r[0]}|{r[1]:05d}" for r in killed[0]])
    assert np.array_equal(whole[1][order_w], killed[1][order_k])


def test_reruns_are_refused_unless_they_resume_or_overwrite(reader, small_corpus, tmp_path):
    settings = IndexSettings(corpus=str(small_corpus), positions="2")
    build_index(reader, settings, tmp_path / "idx", progress=False)
    with pytest.raises(NLAError, match="already holds a finished index; pass --overwrite"):
        build_index(reader, settings, tmp_path / "idx", progress=False)
    (tmp_path / "idx" / SHARD / DONE_JSON).unlink()  # unfinished, and asked with other settings
    with pytest.raises(NLAError, match=r"other settings \(positions '2' -> '3'\)"):
        build_index(reader, IndexSettings(corpus=str(small_corpus), positions="3"), tmp_path / "idx", progress=False)
    build_index(reader, IndexSettings(corpus=str(small_corpus), positions="3"), tmp_path / "idx", overwrite=True,
                progress=False)
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["positions"] == "3"


def test_bad_settings_and_damaged_stores_are_one_line_errors(reader, small_corpus, tmp_path):
    with pytest.raises(NLAError, match="--positions 0 is not all or a whole number"):
        IndexSettings(positions="0")
    with pytest.raises(NLAError, match="--roles wizard: choose among"):
        IndexSettings(roles=("wizard",))
    plain = tmp_path / "plain.txt"
    plain.write_text("Rivers carry water to the sea.\n\nBread rises in a warm oven.")
    with pytest.raises(NLAError, match="has no chats; pass --roles text"):
        build_index(reader, IndexSettings(corpus=str(plain), roles=("assistant",)), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    build_index(reader, IndexSettings(corpus=str(small_corpus)), tmp_path / "idx", progress=False)
    with (tmp_path / "idx" / SHARD / ACTIVATIONS).open("ab") as f:
        f.truncate(100)
    with pytest.raises(NLAError, match="is damaged .*rerun the same nla index command"):
        open_index(tmp_path / "idx")
    with pytest.raises(NLAError, match="is not an nla index"):
        open_index(tmp_path)
    with pytest.raises(NLAError, match="the query is empty"):
        SearchQuery(query="  ")


def test_activation_search_is_the_cosine_with_the_ars_reconstruction(reader, small_corpus, tmp_path):
    build_index(reader, IndexSettings(corpus=str(small_corpus), positions="3"), tmp_path / "idx", progress=False)
    index = open_index(tmp_path / "idx")
    query = "rivers and the sea"
    hits = search(index, reader.nla, SearchQuery(query=query, by="activation", k=5))["hits"]
    direction = reader.nla.reconstruct([query])[0]
    vectors = torch.from_numpy(np.asarray(index.shards[0].vectors, dtype=np.float32))
    cos = torch.nn.functional.cosine_similarity(vectors, direction[None], dim=1)
    assert [h["activation_score"] for h in hits] == pytest.approx(cos.sort(descending=True).values[:5].tolist(),
                                                                  abs=1e-5)
    docs = search(index, reader.nla, SearchQuery(query=query, by="activation", docs=True, per_doc=2, k=100))["hits"]
    ids = [d for (d,) in index.shards[0].db.execute("SELECT doc_id FROM positions ORDER BY id")]
    first = docs[0]["doc_id"]
    mine = cos[[i for i, d in enumerate(ids) if d == first]].sort(descending=True).values[:2].mean()
    assert docs[0]["activation_score"] == pytest.approx(float(mine), abs=1e-5)
    assert len(docs) == len(set(ids)) and all(h["text_score"] is None for h in docs)
    with pytest.raises(NLAError, match="holds no explanations .*search --by activation"):
        search(index, reader.nla, SearchQuery(query=query, by="text"))
    index.close()


def test_an_explained_index_is_searched_by_text_and_filtered(tiny_nla, tiny_llama, small_corpus, tmp_path):
    reader = scripted_reader(tiny_nla, tiny_llama)
    settings = IndexSettings(corpus=str(small_corpus), positions="3", explain="2")
    build_index(reader, settings, tmp_path / "idx", progress=False, batch_size=4)
    index = open_index(tmp_path / "idx")
    explained = index.shards[0].db.execute("SELECT count(*) FROM positions WHERE explanation IS NOT NULL").fetchone()
    assert 0 < explained[0] <= 2 * 41
    hits = search(index, reader.nla, SearchQuery(query="geography", by="text", k=50))["hits"]
    assert hits and all("geography" in h["explanation"].lower() for h in hits)
    both = search(index, reader.nla, SearchQuery(query="geography", k=5))["hits"]
    assert both[0]["text_score"] is not None and both[0]["activation_score"] is not None
    only = search(index, reader.nla, SearchQuery(query="geography", by="text", filters={"genre": "chat"}))["hits"]
    assert {h["genre"] for h in only} <= {"chat"}
    flagged = index.shards[0].db.execute("SELECT flagged, claims FROM positions WHERE explanation LIKE "
                                         "'%purple elephants%'").fetchone()
    assert flagged[0] >= 1 and "purple elephants" in flagged[1]
    index.close()


def test_the_command_line_indexes_and_searches(tiny_nla, tiny_llama, small_corpus, tmp_path):
    runner = CliRunner()
    out = tmp_path / "idx"
    built = runner.invoke(app, ["index", "--corpus", str(small_corpus), "--out", str(out), "--nla", str(tiny_nla),
                                "--model", str(tiny_llama), "--positions", "2"])
    assert built.exit_code == 0, built.output
    assert "indexed" in built.output and "positions/s" in built.output
    found = runner.invoke(app, ["search", str(out), "rivers", "--by", "activation", "--json", "--k", "3"])
    assert found.exit_code == 0, found.output
    result = json.loads(found.output.strip().splitlines()[-1])
    assert result["query"] == "rivers" and len(result["hits"]) == 3
    assert {"doc_id", "score", "text_score", "activation_score", "position", "token", "context",
            "explanation"} <= result["hits"][0].keys()
    table = runner.invoke(app, ["search", str(out), "rivers", "--by", "activation", "--docs"])
    assert table.exit_code == 0 and "⟦" in table.output
    again = runner.invoke(app, ["index", "--corpus", str(small_corpus), "--out", str(out), "--nla", str(tiny_nla),
                                "--model", str(tiny_llama), "--positions", "2"])
    assert again.exit_code == 2 and again.output.strip().splitlines()[-1].startswith("error: ")
    bad = runner.invoke(app, ["search", str(out), "", "--by", "activation"])
    assert bad.exit_code == 2 and "the query is empty" in bad.output


@pytest.mark.parametrize("exact_rows", [262_144, 0])  # the fp32 scan, and the fp16 one of large shards
def test_centred_and_contrast_directions_match_a_direct_computation(reader, small_corpus, tmp_path, monkeypatch,
                                                                    exact_rows):
    monkeypatch.setattr("nla.reading.search.EXACT_ROWS", exact_rows)
    build_index(reader, IndexSettings(corpus=str(small_corpus), positions="3"), tmp_path / "idx", progress=False)
    index = open_index(tmp_path / "idx")
    vectors = torch.from_numpy(np.asarray(index.shards[0].vectors, dtype=np.float32))
    mean = vectors.double().mean(0).float()
    predicted = reader.nla.reconstruct(["rivers", "bread"])
    cases = [(SearchQuery(query="rivers", by="activation", centre=True, k=500), vectors - mean, predicted[0] - mean),
             (SearchQuery(query="rivers", by="activation", against="bread", k=500), vectors,
              predicted[0] - predicted[1])]
    tolerance = 1e-5 if exact_rows else 2e-3  # fp16 products
    for q, rows, direction in cases:
        hits = search(index, reader.nla, q)["hits"]
        cos = torch.nn.functional.cosine_similarity(rows, direction[None], dim=1)
        assert len(hits) == len(rows)
        assert [h["activation_score"] for h in hits] == pytest.approx(
            [float(cos[i]) for i in _ids_of(index, hits)], abs=tolerance)
    index.close()


def _ids_of(index, hits):
    """Row numbers of position hits (doc_id and position are unique)."""
    rows = index.shards[0].db.execute("SELECT doc_id, position FROM positions ORDER BY id").fetchall()
    where = {key: i for i, key in enumerate(rows)}
    return [where[(h["doc_id"], h["position"])] for h in hits]


def test_ties_share_a_rank_and_fusion_ignores_a_signal_that_matched_nothing():
    from nla.reading.search import fused, ranks

    assert ranks(np.array([0.5, np.nan, 0.9, 0.5])).tolist() == [2, np.inf, 1, 2]
    activation = np.array([0.1, 0.3, 0.2])
    no_match = np.full(3, np.nan)
    assert np.argsort(-fused(no_match, activation)).tolist() == np.argsort(-activation).tolist()
    tied = np.zeros(3)  # every row scored alike: the order rows are stored in must not rank them
    assert np.argsort(-fused(tied, activation), kind="stable").tolist() == [1, 2, 0]
