"""`nla eval --robustness`: the meaning-keeping rewrites (the report itself: test_eval.py)."""

import random

import pytest

from nla.errors import NLAError
from nla.eval.claim_text import split_claims
from nla.eval.evaluate import EvalConfig
from nla.eval.robustness import no_quotes, paraphrase, quotes_only, shuffled_sentences


TEXT = 'A chat asking for a poem about gardening. Next it expects " the" or ",". The text so far ends: "… the roses"'


def test_each_rewrite_keeps_what_it_should():
    def claims(text):
        return sorted(c.text.rstrip(".") for c in split_claims(text))

    orders = {shuffled_sentences(TEXT, random.Random(seed)) for seed in range(6)}
    assert len(orders) > 1 and all(claims(o) == claims(TEXT) for o in orders)
    assert '"' not in no_quotes(TEXT) and "gardening" in no_quotes(TEXT) and "roses" not in no_quotes(TEXT)
    assert quotes_only(TEXT) == '" the" "," "… the roses"'
    reworded = paraphrase(TEXT)
    assert "Next it expects" not in reworded and "What probably comes next is" in reworded
    assert reworded.count('"') == TEXT.count('"')  # the quotes themselves are never touched


def test_a_fresh_ar_needs_robustness(tmp_path):
    with pytest.raises(NLAError, match="add --robustness"):
        EvalConfig(out=tmp_path, fresh_ar=tmp_path)
