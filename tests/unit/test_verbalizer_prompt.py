import pytest
import torch

from nla.autoencoder.verbalizer_prompt import AV_TEMPLATE, choose_marker, inject, injection_site, prompt_ids
from nla.errors import NLAError
from nla.models import load_target


@pytest.fixture(params=["llama", "gemma3"])
def target(request, tiny_models):
    return load_target(str(tiny_models[request.param]))


def test_prompt_holds_the_marker_once_with_one_bos(target):
    marker = choose_marker(target.tokenizer)
    ids = prompt_ids(target.tokenizer, AV_TEMPLATE, marker)
    site = injection_site(ids, marker)
    assert ids.count(marker.token_id) == 1
    assert ids.count(target.tokenizer.bos_token_id) <= 1
    if target.adapter.requires_bos:
        assert ids[0] == target.tokenizer.bos_token_id
    assert site.left_neighbor_id == ids[ids.index(marker.token_id) - 1]


def test_injection_replaces_only_the_marker_row_at_the_injection_scale(target):
    marker = choose_marker(target.tokenizer)
    ids = prompt_ids(target.tokenizer, AV_TEMPLATE, marker)
    site = injection_site(ids, marker)
    batch = torch.tensor([ids, ids])
    embeddings = target.model.get_input_embeddings()(batch)
    vectors = torch.randn(2, target.d_model) * 50
    injected = inject(embeddings, batch, vectors, site, injection_scale=150.0)
    pos = ids.index(marker.token_id)
    assert torch.allclose(injected[:, pos].norm(dim=-1), torch.tensor(150.0))
    assert torch.allclose(torch.nn.functional.cosine_similarity(injected[:, pos], vectors), torch.ones(2))
    keep = [i for i in range(len(ids)) if i != pos]
    assert torch.equal(injected[:, keep], embeddings[:, keep])


def test_embeddings_path_equals_the_ids_path_including_gemma_scale(target):
    """Built from the model's own embedding module, inputs_embeds reproduce a normal forward."""
    ids = torch.tensor([prompt_ids(target.tokenizer, AV_TEMPLATE, choose_marker(target.tokenizer))])
    with torch.no_grad():
        by_ids = target.model(input_ids=ids).logits
        by_embeds = target.model(inputs_embeds=target.model.get_input_embeddings()(ids)).logits
    torch.testing.assert_close(by_ids, by_embeds)


def test_site_and_vector_counts_must_agree(target):
    marker = choose_marker(target.tokenizer)
    ids = prompt_ids(target.tokenizer, AV_TEMPLATE, marker)
    site = injection_site(ids, marker)
    batch = torch.tensor([ids])
    embeddings = target.model.get_input_embeddings()(batch)
    with pytest.raises(NLAError, match="found 1 injection sites for 2 vectors"):
        inject(embeddings, batch, torch.randn(2, target.d_model), site, 10.0)
    drifted = batch.clone()
    drifted[0, ids.index(marker.token_id) - 1] = site.left_neighbor_id + 1  # a neighbour changed
    with pytest.raises(NLAError, match="found 0 injection sites"):
        inject(embeddings, drifted, torch.randn(1, target.d_model), site, 10.0)


def test_marker_twice_or_at_an_edge_is_refused(target):
    marker = choose_marker(target.tokenizer)
    with pytest.raises(NLAError, match="2 times"):
        injection_site([5, marker.token_id, 6, marker.token_id, 7], marker)
    with pytest.raises(NLAError, match="edge"):
        injection_site([marker.token_id, 5, 6], marker)
