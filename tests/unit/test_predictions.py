import pytest
import torch

from nla.models import load_target
from nla.models.predictions import next_token_candidates

SEQUENCES = [[5, 9, 13, 40, 41, 42, 43, 44, 45], [7, 8, 9], [100, 101, 102, 103, 104, 105]]


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_batched_candidates_equal_each_sequence_alone(tiny_models, family):
    target = load_target(str(tiny_models[family]))
    got = next_token_candidates(target, SEQUENCES, k=3)
    for seq, candidates in zip(SEQUENCES, got):
        with torch.no_grad():
            probs = target.model(torch.tensor([seq])).logits[0, -1].softmax(-1)
        top = probs.topk(3)
        assert [t for t, _ in candidates] == [target.tokenizer.decode([i]) for i in top.indices.tolist()]
        assert [p for _, p in candidates] == pytest.approx(top.values.tolist(), abs=1e-5)
