import pytest
import torch

from nla.autoencoder.verbalizer import Verbalizer, check_vectors, parse_explanation
from nla.autoencoder.verbalizer_prompt import AV_TEMPLATE, choose_marker, injection_site, prompt_ids
from nla.errors import NLAError
from nla.models import load_target


@pytest.mark.parametrize("answer,text", [
    ("<explanation> a b </explanation>", "a b"),
    ("pre <explanation>first</explanation> <explanation>second</explanation>", "first"),
    ("<explanation>never closed", None),
    ("no tags at all", None),
])
def test_parse_is_non_greedy_and_never_raises(answer, text):
    assert parse_explanation(answer) == text


def make_verbalizer(path) -> Verbalizer:
    target = load_target(str(path))
    marker = choose_marker(target.tokenizer)
    ids = prompt_ids(target.tokenizer, AV_TEMPLATE, marker)
    return Verbalizer(target.model, target.tokenizer, ids, injection_site(ids, marker), injection_scale=20.0)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_batched_greedy_equals_one_at_a_time(tiny_models, family):
    av = make_verbalizer(tiny_models[family])
    torch.manual_seed(0)
    vectors = torch.randn(5, av.d_model)
    batched = av.explain(vectors, max_new_tokens=12, batch_size=5)
    single = [av.explain(v, max_new_tokens=12)[0] for v in vectors]
    assert [e.answer for e in batched] == [e.answer for e in single]
    assert all(e.text is None for e in batched)  # an untrained model writes no tags: counted, not raised


def test_the_vector_reaches_the_next_token_distribution(tiny_llama):
    av = make_verbalizer(tiny_llama)
    torch.manual_seed(1)
    _, embeds, mask = av.prompt_embeddings(torch.randn(2, av.d_model))
    with torch.no_grad():
        logits = av.model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
    assert not torch.allclose(logits[0], logits[1])


@pytest.mark.parametrize("vectors,message", [
    (torch.ones(2, 7), "shape \\(2, 7\\), but this NLA reads d_model 32"),
    (torch.tensor([[1.0] * 31 + [float("nan")]]), "1 activation\\(s\\) hold NaN or inf"),
    (torch.zeros(3, 32), "3 activation\\(s\\) are all zeros"),
])
def test_bad_vectors_are_named(vectors, message):
    with pytest.raises(NLAError, match=message):
        check_vectors(vectors, 32)


def test_no_repeat_ngram_forbids_an_answer_repeating_itself(tiny_llama):
    """A tiny random model loops; with no_repeat_ngram N, explain decodes as HF's no_repeat_ngram_size N does
    (no N answer tokens twice) and the loop is gone."""
    av = make_verbalizer(tiny_llama)
    torch.manual_seed(0)
    vectors = torch.randn(2, av.d_model)
    _, embeds, mask = av.prompt_embeddings(vectors)
    direct = av.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=20, do_sample=False,
                               pad_token_id=0, no_repeat_ngram_size=2).tolist()
    for ids in direct:
        assert len({tuple(ids[i:i + 2]) for i in range(len(ids) - 1)}) == len(ids) - 1
    cured = av.explain(vectors, max_new_tokens=20, no_repeat_ngram=2)
    assert [e.answer for e in cured] == [av.tokenizer.decode(ids, skip_special_tokens=True) for ids in direct]
    assert [e.answer for e in cured] != [e.answer for e in av.explain(vectors, max_new_tokens=20)]
    with pytest.raises(NLAError, match="no-repeat-ngram at least 0"):
        av.explain(vectors, no_repeat_ngram=-1)
