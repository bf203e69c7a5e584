import pytest
import torch

from nla.models import load_target
from nla.models.activations import batched_residual_stream, length_batches, pad_right, residual_stream

SEQUENCES = [[5, 9, 13, 40, 41, 42, 43, 44, 45, 46, 47, 48], [7, 8, 9], [100, 101, 102, 103, 104, 105]]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_residual_stream_equals_hf_hidden_states(tiny_models, family, layer):
    """Layer K = HF hidden_states[K+1], also for right-padded rows of a batch."""
    target = load_target(str(tiny_models[family]))
    ids, mask = pad_right(SEQUENCES, target.tokenizer.pad_token_id, target.device)
    ours = residual_stream(target, ids, mask, layer)
    for row, seq in enumerate(SEQUENCES):
        alone = torch.tensor([seq])
        with torch.no_grad():
            reference = target.model(alone, output_hidden_states=True).hidden_states[layer + 1][0]
        torch.testing.assert_close(ours[row, : len(seq)], reference, atol=1e-5, rtol=1e-5)


def test_later_blocks_and_head_never_run(tiny_llama):
    target = load_target(str(tiny_llama))
    calls = []
    hooks = [target.layers[3].register_forward_hook(lambda *a: calls.append("block3")),
             target.model.lm_head.register_forward_hook(lambda *a: calls.append("lm_head"))]
    ids, mask = pad_right(SEQUENCES, 0, target.device)
    residual_stream(target, ids, mask, 1)
    for h in hooks:
        h.remove()
    assert calls == []


def test_length_batches_respect_the_token_budget():
    lengths = [10, 3, 7, 10, 1, 8]
    batches = length_batches(lengths, batch_tokens=20)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 20 or len(batch) == 1


def test_batched_stream_covers_every_sequence(tiny_llama):
    target = load_target(str(tiny_llama))
    seen = {}
    for indices, hidden in batched_residual_stream(target, SEQUENCES, 1, batch_tokens=16):
        assert hidden.dtype == torch.float32
        for row, i in enumerate(indices):
            seen[i] = hidden[row, : len(SEQUENCES[i])]
    assert sorted(seen) == [0, 1, 2]
