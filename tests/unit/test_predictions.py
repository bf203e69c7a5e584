import pytest
import torch

from nla.models import load_target
from nla.models.predictions import next_token_candidates

SEQUENCES = [[5, 9, 13, 40, 41, 42, 43, 44, 45], [7, 8, 9], [100, 101, 102, 103, 104, 105]]
POSITIONS = [[2, 8], [0, 2], [5]]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_batched_candidates_equal_the_models_own_logits(tiny_models, family):
    target = load_target(str(tiny_models[family]))
    got = next_token_candidates(target, SEQUENCES, POSITIONS, k=3)
    for seq, positions, candidates in zip(SEQUENCES, POSITIONS, got):
        with torch.no_grad():
            probs = target.model(torch.tensor([seq])).logits[0].softmax(-1)
        assert len(candidates) == len(positions)
        for pos, top_k in zip(positions, candidates):
            top = probs[pos].topk(3)
            assert [t for t, _ in top_k] == [target.tokenizer.decode([i]) for i in top.indices.tolist()]
            assert [p for _, p in top_k] == pytest.approx(top.values.tolist(), abs=1e-5)
