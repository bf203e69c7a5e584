"""nla eval's readability: quotes of the context are checked against it; quoted predictions are not."""

import math

from nla.eval.readability import quote_precision

CONTEXT = "The river runs\nto the sea, and"


def test_context_quotes_are_checked_and_predictions_are_not():
    texts = ['A text about nature. Next it expects " feed" or " shape". The text so far ends: "…runs\nto the sea, and"',
             'A text about nature. Next it expects " feed". The text so far ends: "…purple elephants"',
             None]
    result = quote_precision(texts, [CONTEXT] * 3)
    assert result == {"quotes": 2, "found_in_context": 1, "precision": 0.5}  # the multi-line quote counts
    assert math.isnan(quote_precision([None], [CONTEXT])["precision"])
