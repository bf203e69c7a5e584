"""The residual injection: the vector replaces block K's output at the marker, and nothing else changes."""

import pytest
import torch

from conftest import write_toy_pairs
from nla.autoencoder.injection import Injection
from nla.autoencoder.nla import NLA
from nla.autoencoder.reconstructor import normalize
from nla.autoencoder.verbalizer import Verbalizer
from nla.autoencoder.verbalizer_prompt import AV_TEMPLATE, choose_marker, injection_site, prompt_ids
from nla.errors import NLAError
from nla.models import load_target
from nla.train.ar import train_ar
from nla.train.av import train_av
from nla.train.config import ARTrainConfig, AVTrainConfig

LAYER, SCALE = 1, 20.0


def make_verbalizer(path, injection: Injection) -> Verbalizer:
    target = load_target(str(path))
    marker = choose_marker(target.tokenizer)
    ids = prompt_ids(target.tokenizer, AV_TEMPLATE, marker)
    return Verbalizer(target.model, target.tokenizer, ids, injection_site(ids, marker), SCALE, injection)


def hidden_states(av: Verbalizer, vectors: torch.Tensor) -> tuple:
    _, embeds, mask = av.prompt_embeddings(vectors)
    with torch.no_grad(), av.reading():
        return av.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_vector_replaces_block_k_output_and_blocks_before_see_a_plain_prompt(tiny_models, family):
    av = make_verbalizer(tiny_models[family], Injection("residual", LAYER))
    marker_at = av.prompt.index(av.site.marker.token_id)
    torch.manual_seed(0)
    vectors = torch.randn(2, av.d_model)
    states = hidden_states(av, vectors)
    # hidden_states[K + 1] is block K's output: the rescaled vector sits there at the marker.
    assert torch.allclose(states[LAYER + 1][:, marker_at], normalize(vectors, SCALE), atol=1e-5)
    for k in range(LAYER + 1):  # embeddings and blocks 0..K-1: the same for both rows (no vector yet)
        assert torch.allclose(states[k][0], states[k][1], atol=1e-6)
    plain = av.model(torch.tensor([av.prompt]), output_hidden_states=True).hidden_states
    assert torch.allclose(states[LAYER][0], plain[LAYER][0], atol=1e-5)  # the marker's own embedding went back
    # Later blocks read the vector (the next position: tiny Gemma's sliding window is 4 tokens).
    assert not torch.allclose(states[-1][0, marker_at + 1], states[-1][1, marker_at + 1])


def test_two_sites_write_the_vector_at_both_blocks_and_the_blocks_between_carry_it(tiny_llama):
    av = make_verbalizer(tiny_llama, Injection("residual", LAYER, early_layer=0))
    marker_at = av.prompt.index(av.site.marker.token_id)
    torch.manual_seed(0)
    vectors = torch.randn(2, av.d_model)
    states = hidden_states(av, vectors)
    for k in (0, LAYER):  # hidden_states[k + 1]: block k's output, the rescaled vector at the marker
        assert torch.allclose(states[k + 1][:, marker_at], normalize(vectors, SCALE), atol=1e-5)
    assert torch.allclose(states[0][0], states[0][1], atol=1e-6)  # the embeddings: a plain prompt for both
    # Block LAYER already reads the vector at the next position; with one site it does not.
    assert not torch.allclose(states[LAYER + 1][0, marker_at + 1], states[LAYER + 1][1, marker_at + 1])
    one_site = hidden_states(make_verbalizer(tiny_llama, Injection("residual", LAYER)), vectors)
    assert torch.allclose(one_site[LAYER + 1][0, marker_at + 1], one_site[LAYER + 1][1, marker_at + 1], atol=1e-6)


def test_sidecar_keeps_its_one_site_layout_and_records_a_second():
    assert Injection("residual", 5).to_dict() == {"site": "residual", "layer": 5}
    two = Injection("residual", 5, early_layer=2)
    assert two.to_dict() == {"site": "residual", "layer": 5, "early_layer": 2}
    assert Injection.from_dict(two.to_dict()) == two and two.layers == (2, 5)


def test_hooks_do_nothing_outside_reading(tiny_llama):
    av = make_verbalizer(tiny_llama, Injection("residual", LAYER))
    ids = torch.tensor([av.prompt + av.prompt])  # longer than the prompt, as a target text may be
    plain = load_target(str(tiny_llama)).model(ids).logits
    assert torch.allclose(av.model(ids).logits, plain, atol=1e-6)


def test_batched_greedy_equals_one_at_a_time_with_residual_injection(tiny_llama):
    av = make_verbalizer(tiny_llama, Injection("residual", LAYER))
    torch.manual_seed(2)
    vectors = torch.randn(4, av.d_model)
    batched = av.explain(vectors, max_new_tokens=10, batch_size=4)
    single = [av.explain(v, max_new_tokens=10)[0] for v in vectors]
    assert [e.answer for e in batched] == [e.answer for e in single]


@pytest.mark.parametrize("raw,message", [({"site": "middle"}, "unknown"), ({"site": "residual"}, "needs the layer"),
                                         ({"site": "residual", "layer": 2, "early_layer": 2}, "block before"),
                                         ({"site": "embedding", "early_layer": 0}, "block before")])
def test_bad_injection_settings_are_named(raw, message):
    with pytest.raises(NLAError, match=message):
        Injection.from_dict(raw)


def test_layer_past_the_model_is_refused(tiny_llama):
    with pytest.raises(NLAError, match="the AV has 4 blocks"):
        make_verbalizer(tiny_llama, Injection("residual", 7))


@pytest.mark.parametrize("early", [None, 0])
def test_residual_av_trains_saves_its_site_and_loads_as_an_nla(tmp_path, tiny_llama, early):
    data = write_toy_pairs(tmp_path / "pairs.parquet", ["river", "bread"], rows=32, noise=0.3,
                           template="about {word}")[0]
    out = tmp_path / "nla"
    train_av(AVTrainConfig(data=data, out=out, model=str(tiny_llama), layer=LAYER, lora_rank=4, batch_size=16,
                           epochs=0.5, injection="residual", injection_early_layer=early), progress=False)
    train_ar(ARTrainConfig(data=data, out=out, model=str(tiny_llama), layer=LAYER, lora_rank=4, batch_size=16,
                           epochs=0.5), progress=False)
    assert "site: residual" in (out / "av_adapter" / "nla_meta.yaml").read_text()
    shared, merged = NLA.load(out), NLA.load(out, shared_base=False)
    assert shared.verbalizer.injection == merged.verbalizer.injection == Injection("residual", LAYER, early)
    vectors = torch.randn(3, 32)
    assert [e.answer for e in shared.explain(vectors, max_new_tokens=6)] == \
           [e.answer for e in merged.explain(vectors, max_new_tokens=6)]
    # On the shared base the target's own activations stay untouched by the AV's hooks.
    ids = [5, 6, 7, 8, 9] * 12
    assert torch.allclose(shared.activations(ids), merged.activations(ids), atol=1e-5)


def test_a_fresh_projector_adds_nothing_and_a_trained_one_adds_its_vectors_after_the_marker(tiny_llama):
    from nla.autoencoder.soft_tokens import projector_of

    torch.manual_seed(0)
    vectors = torch.randn(2, 32)
    plain = hidden_states(make_verbalizer(tiny_llama, Injection("residual", LAYER)), vectors)
    av = make_verbalizer(tiny_llama, Injection("residual", LAYER, soft_tokens=3))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, hidden_states(av, vectors)))
    projector = projector_of(av.model)
    torch.nn.init.normal_(projector.out.weight)  # as if trained
    states, marker_at = hidden_states(av, vectors), av.prompt.index(av.site.marker.token_id)
    assert torch.allclose(states[LAYER + 1][:, marker_at], normalize(vectors, SCALE), atol=1e-5)
    after = slice(marker_at + 1, marker_at + 4)
    with torch.no_grad():
        added = projector(normalize(vectors, SCALE))
    assert torch.allclose(states[LAYER + 1][:, after], plain[LAYER + 1][:, after] + added, atol=1e-4)
    assert torch.allclose(states[LAYER + 1][:, marker_at + 4], plain[LAYER + 1][:, marker_at + 4], atol=1e-6)


def test_soft_tokens_are_recorded_and_checked():
    soft = Injection("residual", 5, soft_tokens=4)
    assert soft.to_dict() == {"site": "residual", "layer": 5, "soft_tokens": 4}
    assert Injection.from_dict(soft.to_dict()) == soft
    with pytest.raises(NLAError, match="need site residual"):
        Injection(soft_tokens=2)
    with pytest.raises(NLAError, match="applies to --injection residual only"):
        AVTrainConfig(data="rows.parquet", out="out", injection_soft_tokens=2)


def test_more_soft_tokens_than_the_prompt_holds_after_the_marker_are_refused(tiny_llama):
    with pytest.raises(NLAError, match="do not fit after the marker"):
        make_verbalizer(tiny_llama, Injection("residual", LAYER, soft_tokens=500))
