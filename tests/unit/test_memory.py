"""The memory figures of the README's released-NLA table come from parameter counts; check the counts against
the published sizes of the targets (Qwen2.5-7B: 7,615,616,512; Llama-3.3-70B: 70,553,706,496)."""

import pytest

from nla.models.memory import RELEASED, config_of, nla_memory, parameter_counts


@pytest.mark.parametrize("index,published", [(0, 7_615_616_512), (3, 70_553_706_496)])
def test_parameter_counts_match_the_published_models(index, published):
    released = RELEASED[index]
    assert parameter_counts(config_of(released), released.layer)["full"] == published


def test_the_ar_holds_embeddings_and_blocks_0_to_k(tiny_llama):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama)  # 4 blocks, tied embeddings
    counts = parameter_counts(config, layer=1)
    embeddings = config.vocab_size * config.hidden_size
    assert (counts["full"] - embeddings - config.hidden_size) == 2 * (counts["ar_backbone"] - embeddings)
    memory = nla_memory(config, layer=1)
    assert memory["total_gb"] == pytest.approx(memory["av_gb"] + memory["ar_gb"] + memory["target_gb"])
