from nla.explainers.base import ExplainRequest
from nla.explainers.offline import OfflineExplainer, token_role


def request(i, **kw):
    base = dict(row_id=f"doc-{i}:{i + 20}", context="Rivers carry water from the hills to the sea, and",
                token=" and", source="prose", genre="encyclopedia", topic="nature",
                next_tokens=((" feed", 0.6), (" shape", 0.2), (" carry", 0.1)))
    return ExplainRequest(**{**base, **kw})


def test_explanation_states_the_facts():
    text = OfflineExplainer().explain([request(0)])[0]
    assert "encyclopedia" in text and "nature" in text
    assert "the hills to the sea, and" in text and "'feed'" in text
    assert 2 <= len(text.split("\n\n")) <= 3


def test_wording_varies_across_rows_but_is_stable_per_row():
    explainer = OfflineExplainer()
    texts = explainer.explain([request(i) for i in range(40)])
    first_sentences = {t.split(".")[0] for t in texts}
    assert len(first_sentences) >= 3
    assert explainer.explain([request(7)]) == [texts[7]]


def test_without_predictions_it_still_explains():
    assert "\n\n" not in OfflineExplainer().explain([request(1, next_tokens=())])[0]


def test_token_roles():
    assert token_role(".") == "the end of a sentence"
    assert token_role(" river") == "the word 'river'"
    assert token_role("ing") == "a piece of a longer word ('ing')"
    assert token_role("\n") == "a line break" and token_role(" 42") == "a number"
