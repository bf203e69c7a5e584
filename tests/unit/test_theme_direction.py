"""benchmarks/theme_direction.py pairs each document's salient-words sentences with its mean direction."""

import numpy as np
import pyarrow as pa

from conftest import load_benchmark
from nla.layout import ACTIVATION_COLUMN

theme = load_benchmark("theme_direction")


def _table(vectors, docs, positions, texts):
    flat = pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    return pa.table({ACTIVATION_COLUMN: pa.FixedSizeListArray.from_arrays(flat, 2), "doc_id": docs,
                     "position": positions, "explanation": texts})


def test_a_document_is_its_last_rows_about_text_and_its_mean_normalised_direction_less_the_centre():
    table = _table([[3, 0], [0, 5], [1, 1]], ["a", "a", "b"], [4, 9, 2],
                   ['A chat. It mentions "x". The text so far ends: "…"',
                    'A chat. Its system prompt mentions "sea". It mentions "x". The text so far ends: "…"',
                    'A news story. The text so far ends: "…It mentions "q"."'])
    rows, texts, directions = theme.doc_pairs(table, centre=np.array([1.0, 0.0]))
    assert rows == [1] and texts == ['Its system prompt mentions "sea". It mentions "x".']  # "b" has no about part
    np.testing.assert_allclose(directions, [[np.sqrt(2) / 2 - 1, np.sqrt(2) / 2]], rtol=1e-6)
