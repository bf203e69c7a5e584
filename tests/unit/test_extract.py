import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from nla.data import extract as extract_module
from nla.data.corpus import load_corpus
from nla.data.extract import ExtractConfig, extract
from nla.data.sampling import SPLITS
from nla.errors import NLAError
from nla.inputs import vectors_of
from nla.layout import sidecar_path
from nla.models import load_target


def config(tmp_path, model, corpus, **overrides) -> ExtractConfig:
    settings = dict(out=tmp_path / "acts", model=str(model), corpus=str(corpus), layer=1, positions_per_doc=4,
                    min_position=4, chunk_docs=8, batch_tokens=256)
    return ExtractConfig(**{**settings, **overrides})


def read_all(out):
    return {split: pq.read_table(out / f"{split}.parquet") for split in SPLITS}


def test_extraction_writes_splits_sidecars_and_summary(tmp_path, tiny_llama, small_corpus):
    cfg = config(tmp_path, tiny_llama, small_corpus)
    summary = extract(cfg, progress=False)
    tables = read_all(cfg.out)
    assert summary["documents"] == 41 and summary["documents_skipped_too_short"] == 1
    assert summary["rows"] == sum(t.num_rows for t in tables.values()) == 40 * 4
    assert (cfg.out / "config.yaml").exists() and not (cfg.out / ".partial").exists()
    for split, table in tables.items():
        meta = yaml.safe_load(sidecar_path(cfg.out / f"{split}.parquet").read_text())
        assert meta["kind"] == "nla_dataset" and meta["schema_version"] == 1
        assert meta["row_count"] == table.num_rows and meta["split"] == split
        assert meta["stage"] == {"validation": "base", "test": "base"}.get(split, split)
        assert meta["extraction"]["layer_index"] == 1 and meta["extraction"]["d_model"] == 32
        assert meta["extraction"]["norm"] == "none" and meta["extraction"]["positions_per_doc"] == 4
        assert table.schema.field("activation_vector").type.list_size == 32
        assert set(table.column("split").to_pylist()) <= {split}
    # Splits are by document: no document appears in two of them.
    docs_per_split = [set(t.column("doc_id").to_pylist()) for t in tables.values()]
    assert sum(len(s) for s in docs_per_split) == len(set().union(*docs_per_split)) == 40


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_rows_hold_the_raw_activation_at_their_position(tmp_path, tiny_models, small_corpus, family):
    cfg = config(tmp_path, tiny_models[family], small_corpus)
    extract(cfg, progress=False)
    table = pq.read_table(cfg.out / "rl.parquet")
    target = load_target(str(tiny_models[family]))
    docs = {d.doc_id: d for d in load_corpus(str(small_corpus))}
    vectors = vectors_of(table)
    for i in range(0, table.num_rows, 5):
        doc = docs[table.column("doc_id")[i].as_py()]
        ids = extract_module.encode_document(target, doc, cfg.max_doc_tokens)
        pos = table.column("position")[i].as_py()
        assert pos >= 4 and table.column("n_raw_tokens")[i].as_py() == pos + 1
        assert table.column("token_id")[i].as_py() == ids[pos]
        assert ids[0] == target.tokenizer.bos_token_id if family == "gemma3" else target.tokenizer.bos_token_id not in ids
        assert table.column("detokenized_text_truncated")[i].as_py() == target.tokenizer.decode(ids[: pos + 1])
        with torch.no_grad():
            reference = target.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[2][0, pos]
        np.testing.assert_allclose(vectors[i], reference.numpy(), atol=1e-5, rtol=1e-5)


def test_chat_documents_are_rendered_with_the_chat_template(tmp_path, tiny_llama, small_corpus):
    cfg = config(tmp_path, tiny_llama, small_corpus)
    extract(cfg, progress=False)
    rows = [r for t in read_all(cfg.out).values() for r in t.select(["genre", "detokenized_text_truncated"]).to_pylist()]
    chats = [r for r in rows if r["genre"] == "chat"]
    assert chats and all(r["detokenized_text_truncated"].startswith("<|im_start|>user\n") for r in chats)


def test_special_tokens_are_never_sampled(tmp_path, tiny_llama, small_corpus):
    cfg = config(tmp_path, tiny_llama, small_corpus, positions_per_doc=64, min_position=0)
    extract(cfg, progress=False)
    target = load_target(str(tiny_llama))
    chat_markers = set(target.tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]))
    assert chat_markers <= target.special_ids  # added special tokens count, not only the named ones
    sampled = {t for table in read_all(cfg.out).values() for t in table.column("token_id").to_pylist()}
    assert sampled and not sampled & target.special_ids


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path, tiny_llama, small_corpus):
    cfg = config(tmp_path, tiny_llama, small_corpus)
    extract(cfg, progress=False)
    before = (cfg.out / "rl.parquet").read_bytes()
    with pytest.raises(NLAError, match="already holds an extraction; pass --overwrite"):
        extract(cfg, progress=False)
    assert (cfg.out / "rl.parquet").read_bytes() == before
    summary = extract(config(tmp_path, tiny_llama, small_corpus, layer=2, overwrite=True), progress=False)
    assert summary["layer"] == 2


def test_interrupted_run_resumes_to_the_same_result(tmp_path, tiny_llama, small_corpus, monkeypatch):
    reference = config(tmp_path / "ref", tiny_llama, small_corpus)
    extract(reference, progress=False)

    cfg = config(tmp_path, tiny_llama, small_corpus)
    real_chunk = extract_module.extract_chunk
    calls = {"n": 0}

    def dying_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if killed while computing the third chunk
        return real_chunk(*args, **kwargs)

    monkeypatch.setattr(extract_module, "extract_chunk", dying_chunk)
    with pytest.raises(KeyboardInterrupt):
        extract(cfg, progress=False)
    assert not (cfg.out / "summary.json").exists() and not (cfg.out / "rl.parquet").exists()
    assert len(list((cfg.out / ".partial").glob("chunk-*.parquet"))) == 2
    monkeypatch.setattr(extract_module, "extract_chunk", real_chunk)

    summary = extract(cfg, progress=False)
    assert summary["tokens_computed_this_run"] < summary["tokens"]
    for split, table in read_all(cfg.out).items():
        assert table.equals(pq.read_table(reference.out / f"{split}.parquet")), split


def finished_with_explanations(tmp_path, tiny_llama, small_corpus):
    """A finished extraction, and explanations made from it inside it (as nla explain-data writes them)."""
    out = config(tmp_path, tiny_llama, small_corpus).out
    extract(config(tmp_path, tiny_llama, small_corpus), progress=False)
    (out / "explanations-offline").mkdir()
    (out / "explanations-offline" / "summary.json").write_text("{}")
    return out


def test_interrupted_overwrite_keeps_the_old_output_whole_then_resumes(tmp_path, tiny_llama, small_corpus,
                                                                      monkeypatch):
    out = finished_with_explanations(tmp_path, tiny_llama, small_corpus)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    real_chunk, calls = extract_module.extract_chunk, {"n": 0}

    def dying_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed while computing the new extraction's second chunk
        return real_chunk(*args, **kwargs)

    monkeypatch.setattr(extract_module, "extract_chunk", dying_chunk)
    with pytest.raises(KeyboardInterrupt):
        extract(config(tmp_path, tiny_llama, small_corpus, layer=2, overwrite=True), progress=False)
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before  # whole
    assert (out / "explanations-offline").is_dir()
    with pytest.raises(NLAError, match=r"pass --overwrite to replace it \(and explanations-offline/, made from it\)"):
        extract(config(tmp_path, tiny_llama, small_corpus, layer=2), progress=False)

    summary = extract(config(tmp_path, tiny_llama, small_corpus, layer=2, overwrite=True), progress=False)
    assert summary["layer"] == 2 and summary["tokens_computed_this_run"] < summary["tokens"]  # resumed
    assert json.loads((out / "summary.json").read_text())["layer"] == 2
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []  # the old explanations went with the old data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts", "corpus.jsonl"]  # no staging or old copy left


def test_overwrite_killed_between_the_two_renames_recovers_the_new_output(tmp_path, tiny_llama, small_corpus,
                                                                          monkeypatch):
    import os

    out = finished_with_explanations(tmp_path, tiny_llama, small_corpus)

    def first_rename_only(new, folder):
        os.replace(folder, folder.with_name(f".{folder.name}.old"))
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_module, "swap_folder", first_rename_only)
    with pytest.raises(KeyboardInterrupt):
        extract(config(tmp_path, tiny_llama, small_corpus, layer=2, overwrite=True), progress=False)
    monkeypatch.undo()
    assert not out.exists()
    with pytest.raises(NLAError, match="already holds an extraction"):  # the new one, recovered whole
        extract(config(tmp_path, tiny_llama, small_corpus, layer=2), progress=False)
    assert json.loads((out / "summary.json").read_text())["layer"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts", "corpus.jsonl"]


def test_changed_corpus_is_not_resumed_into_old_chunks(tmp_path, tiny_llama, small_corpus, monkeypatch):
    monkeypatch.setattr(extract_module, "extract_chunk", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        extract(config(tmp_path, tiny_llama, small_corpus), progress=False)
    monkeypatch.undo()
    with small_corpus.open("a") as f:
        f.write(json.dumps({"id": "late", "text": "A document added after the run began, long enough to sample."}) + "\n")
    with pytest.raises(NLAError, match=r"other settings \(plan '[0-9a-f]+' -> '[0-9a-f]+'\)"):
        extract(config(tmp_path, tiny_llama, small_corpus), progress=False)


def test_unfinished_run_with_other_settings_is_not_mixed(tmp_path, tiny_llama, small_corpus, monkeypatch):
    cfg = config(tmp_path, tiny_llama, small_corpus)
    monkeypatch.setattr(extract_module, "extract_chunk", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        extract(cfg, progress=False)
    monkeypatch.undo()
    with pytest.raises(NLAError, match=r"unfinished extraction with other settings \(layer 1 -> 2\)"):
        extract(config(tmp_path, tiny_llama, small_corpus, layer=2), progress=False)
    assert extract(config(tmp_path, tiny_llama, small_corpus, layer=2, overwrite=True), progress=False)["layer"] == 2


@pytest.mark.parametrize("overrides,message", [
    (dict(layer=9), "layer 9 is out of range"),
    (dict(min_position=400), "no document .* has a usable position"),
    (dict(positions_per_doc=0), "positions-per-doc must be at least 1"),
    (dict(min_position=600), "min-position must be below max-doc-tokens"),
])
def test_bad_settings_fail_before_writing_anything_final(tmp_path, tiny_llama, small_corpus, overrides, message):
    with pytest.raises(NLAError, match=message):
        extract(config(tmp_path, tiny_llama, small_corpus, **overrides), progress=False)
    assert not (tmp_path / "acts").exists()


def test_settings_are_saved_for_later_stages(tmp_path, tiny_llama, small_corpus):
    cfg = config(tmp_path, tiny_llama, small_corpus)
    summary = extract(cfg, progress=False)
    saved = yaml.safe_load((cfg.out / "config.yaml").read_text())
    assert saved["resolved_layer"] == 1 and saved["corpus"] == str(small_corpus)
    assert json.loads((cfg.out / "summary.json").read_text()) == summary
    assert summary["suggested_injection_scale"] >= summary["activation_norm"]["mean"]
