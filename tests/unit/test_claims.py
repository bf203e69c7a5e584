"""Per-claim checks: the claim split, quote detection and lookup, leave-one-out weights through a real AR."""

import pytest
import torch

from conftest import build_tiny_nla
from nla.autoencoder.nla import NLA
from nla.autoencoder.reconstructor import reconstruction_mse
from nla.eval.claim_text import NEGLIGIBLE_WEIGHT, locate_quote, predicted_by, quote_spans, split_claims, without
from nla.reading.claims import check_claims, claims_report


def test_claims_are_sentences_and_clauses_and_quotes_never_split():
    text = ('The text is a recipe, e.g. for bread. It quotes "the oven. Hot" here; the next token is \'flour\'.\n'
            "- A list item\n2. Another one! Then more.")
    claims = split_claims(text)
    assert [c.text for c in claims] == ["The text is a recipe, e.g. for bread.", 'It quotes "the oven. Hot" here;',
                                        "the next token is 'flour'.", "A list item", "Another one!", "Then more."]
    assert all(text[c.start : c.end] == c.text for c in claims)
    assert split_claims("  ") == [] and [c.text for c in split_claims("one claim")] == ["one claim"]


def test_quotes_of_every_style_but_not_apostrophes():
    text = "The model's view: \"a b\", “curly”, ‘single’, `code` and 'plain' but don't split."
    assert [text[s:e] for s, e in quote_spans(text)] == ["a b", "curly", "single", "code", "plain"]
    quoted_quote = 'The last words are "assigned using ", ending on the symbol \'"\', and then \'"\'.'
    assert [quoted_quote[s:e] for s, e in quote_spans(quoted_quote)] == ["assigned using ", '"', '"']


def test_a_quote_is_grounded_only_in_the_text_up_to_its_token():
    assert locate_quote("the  Oven", "We heat THE oven now") == "context"
    assert locate_quote("heat ... now,", "We heat the oven now") == "context"  # each piece of an ellipsis
    assert locate_quote("fresh bread", "We bake", " fresh bread later") == "later"
    assert locate_quote("purple elephants", "We bake", " bread") == "absent"


@pytest.fixture(scope="module")
def tiny_nla(tmp_path_factory, tiny_llama):
    return NLA.load(build_tiny_nla(tmp_path_factory.mktemp("claims") / "nla", tiny_llama))


def test_weights_are_leave_one_out_score_drops_computed_in_one_batch(tiny_nla, monkeypatch):
    texts = ['It is about rivers. It quotes "carry water"; it mentions "purple elephants". Next comes "the sea".',
             None, "One claim only."]
    vectors = torch.randn(3, 32)
    mse = tiny_nla.mse(vectors, texts)
    calls = []
    reconstruct = tiny_nla.reconstruct
    monkeypatch.setattr(tiny_nla, "reconstruct", lambda t, **kw: calls.append(list(t)) or reconstruct(t, **kw))
    claims = check_claims(tiny_nla, texts, vectors, mse, ["Rivers carry water"] * 3, [" to the sea"] * 3,
                          denominator=0.5)
    assert len(calls) == 1 and len(calls[0]) == 5  # 4 + 1 variants, one AR pass
    assert claims[1] == [] and [c.text for c in claims[2]] == ["One claim only."]
    first = claims[0]
    assert [c.text for c in first] == ["It is about rivers.", 'It quotes "carry water";',
                                       'it mentions "purple elephants".', 'Next comes "the sea".']
    for claim in first:  # the weight is what removing the claim costs, in score units
        expected = (float(reconstruction_mse(reconstruct([without(texts[0], claim)]), vectors[:1])) - mse[0]) / 0.5
        assert claim.weight == pytest.approx(expected, abs=1e-4)
        assert claim.negligible == (claim.weight < NEGLIGIBLE_WEIGHT)
    assert [(q.text, q.where, q.prediction, q.flagged) for c in first for q in c.quotes] == [
        ("carry water", "context", False, False), ("purple elephants", "absent", False, True),
        ("the sea", "later", True, False)]  # a quoted prediction that came true is not a confabulated quote
    assert without(texts[2], claims[2][0]) == ""


def test_report_counts_negligible_claims_and_flagged_quotes():
    claim = lambda weight, *flags: {"negligible": weight < NEGLIGIBLE_WEIGHT,  # noqa: E731
                                    "quotes": [{"flagged": f, "prediction": f is None} for f in flags]}
    report = claims_report([[claim(0.2, False), claim(0.001, True)], [], [claim(-0.1, None)]])
    assert report["explanations"] == 2 and report["claims"] == 3 and report["negligible"] == 2
    assert report["negligible_share"] == pytest.approx(2 / 3)
    assert report["quotes"] == 2 and report["flagged_share"] == 0.5 and report["quoted_predictions"] == 1
    assert claims_report([])["negligible_share"] is None


def test_a_quote_holding_a_line_break_stays_inside_its_claim():
    """A predicted newline is written as a real line break between quote marks; the claim must not split there
    (it once came out as the fragments 'Next it expects "' and '" or "the".')."""
    text = 'A numbered list. Next it expects "\n" or "the". It quotes "one\ntwo".'
    claims = [c.text for c in split_claims(text)]
    assert claims == ['A numbered list.', 'Next it expects "\n" or "the".', 'It quotes "one\ntwo".']
    assert [text[s:e] for s, e in quote_spans(text)] == ["the", "one\ntwo"]  # a blank quote is not checked


def test_a_quoted_prediction_is_checked_against_the_targets_next_tokens():

    assert predicted_by("the", [" the", " a"]) is True
    assert predicted_by("The river", [" the"]) is True  # its first token is the likeliest one
    assert predicted_by("cat", [" the", " a"]) is False
    assert predicted_by("the", None) is None  # no candidates: not checked
