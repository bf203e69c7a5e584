import pytest
from transformers import AutoTokenizer

from nla.autoencoder.marker import MARKER_RANGES, find_marker


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_marker_is_one_token_alone_and_in_context(tiny_models, family):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[family])
    marker = find_marker(tokenizer)
    assert tokenizer.encode(marker.char, add_special_tokens=False) == [marker.token_id]
    assert tokenizer.decode([marker.token_id]) == marker.char
    assert marker.token_id not in tokenizer.all_special_ids
    in_context = tokenizer.encode(f"Explain this ({marker.char}) please.", add_special_tokens=False)
    assert in_context.count(marker.token_id) == 1


def test_tiny_byte_level_vocab_falls_back_to_a_rare_token(tiny_llama):
    """A 600-token BPE has no symbol from the scanned ranges as one token, so the vocabulary scan decides."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    marker = find_marker(tokenizer)
    scanned = {chr(c) for low, high in MARKER_RANGES for c in range(low, high + 1)}
    assert marker.char not in scanned
    assert marker.token_id > len(tokenizer) // 2  # taken from the rare end
