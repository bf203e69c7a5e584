from nla.explainers.base import ExplainRequest
from nla.explainers.offline import OfflineExplainer

CONTEXT = "Rivers carry water from the hills to the sea, and"


def request(i, **kw):
    base = dict(row_id=f"doc-{i}:{i + 20}", context=CONTEXT, token=" and", source="prose", genre="encyclopedia",
                topic="nature", next_tokens=((" feed", 0.6), (" shape", 0.2), (" carry", 0.1)),
                quote=" to the sea, and")
    return ExplainRequest(**{**base, **kw})


def test_explanation_states_the_facts_in_order():
    text = OfflineExplainer().explain([request(0)])[0]
    assert text == ('An encyclopedia about nature. Next it expects " feed", " shape" or " carry". '
                    'The text so far ends: "… to the sea, and"')


def test_the_quote_is_a_substring_of_the_context():
    text = OfflineExplainer().explain([request(1)])[0]
    quoted = text.split('ends: "')[1].rstrip('"').lstrip("…")
    assert CONTEXT.endswith(quoted)


def test_genres_read_as_english():
    assert OfflineExplainer().explain([request(3, genre="how-to", source="smollm2-chat")])[0].startswith(
        "A chat asking for a how-to guide about nature.")


def test_a_whole_context_quote_has_no_ellipsis_and_no_predictions_is_fine():
    text = OfflineExplainer().explain([request(2, quote=CONTEXT, next_tokens=())])[0]
    assert "expects" not in text and text.endswith(f'ends: "{CONTEXT}"')
