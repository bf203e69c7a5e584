"""The NLA shipped in the package: loads offline and reads held-out text better than its shuffled control."""

import pytest
import torch

from nla.autoencoder.nla import NLA
from nla.autoencoder.shipped import default_dir
from nla.data.corpus import load_corpus
from nla.data.sampling import SplitFractions, assign_split
from nla.eval.metrics import baseline, fidelity

# Skipped, visibly, only where the package holds no NLA (a checkout that dropped src/nla/default_nla/).
pytestmark = [pytest.mark.real, pytest.mark.skipif(not (default_dir() / "av_adapter").exists(),
                                                   reason="this checkout has no shipped NLA (src/nla/default_nla/)")]

ROWS = 24


def held_out_activations(nla: NLA, rows: int) -> torch.Tensor:
    """Layer-K activations at positions >= 16 of default-corpus documents in the validation split (the
    documents the shipped NLA's training never saw), a few per document."""
    target = nla.target()
    found = []
    for doc in load_corpus("default"):
        if assign_split(doc.doc_id, 42, SplitFractions()) != "validation" or doc.messages is not None:
            continue
        ids = target.tokenizer(doc.text, add_special_tokens=False)["input_ids"][:96]
        if len(ids) < 40:
            continue
        acts = nla.activations(ids)
        found += [acts[p] for p in (20, 39, len(ids) - 1)]
        if len(found) >= rows:
            return torch.stack(found[:rows])
    raise AssertionError("the default corpus has too few validation documents")


def test_the_shipped_nla_loads_offline_and_beats_its_shuffled_control(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nla = NLA.load("default", device="cpu")
    assert nla.layer == 20 and nla.d_model == 576 and nla.shared_base
    vectors = held_out_activations(nla, ROWS)
    reference = baseline(vectors)
    texts = [e.text for e in nla.explain(vectors, max_new_tokens=120)]
    assert sum(t is None for t in texts) <= 2
    texts = [t or "" for t in texts]
    real = fidelity(nla.reconstruct(texts), vectors, reference)["fve"]
    shuffled = fidelity(nla.reconstruct(texts[1:] + texts[:1]), vectors, reference)["fve"]
    assert real > shuffled + 0.2, (real, shuffled)
