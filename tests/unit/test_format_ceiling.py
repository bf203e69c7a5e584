"""benchmarks/format_ceiling.py's variants read explain-data's own texts: the whole explanation, or only its
salient-words sentences (never words of the quote, which may hold anything)."""

import pyarrow as pa

from conftest import load_benchmark

ceiling = load_benchmark("format_ceiling")


def test_the_about_variant_keeps_only_the_salient_words_sentences():
    text = ('A chat asking for a story about science. Its system prompt mentions "pirate" and "captain". '
            'It mentions "ship", "sea" and "gold". Next it expects " the". The text so far ends: "…It mentions "x"."')
    table = pa.table({"explanation": [text, "A news story. The text so far ends: \"…ok\""]})
    assert ceiling.variant_texts("explained", table, tokenizer=None) == table.column("explanation").to_pylist()
    assert ceiling.variant_texts("about", table, tokenizer=None) == [
        'Its system prompt mentions "pirate" and "captain". It mentions "ship", "sea" and "gold".', ""]


def test_the_no_about_variant_is_the_text_without_those_sentences():
    text = ('A chat. Its system prompt mentions "pirate". It mentions "ship" and "gold". Next it expects " the". '
            'The text so far ends: "…It mentions "x"."')
    table = pa.table({"explanation": [text]})
    assert ceiling.variant_texts("no_about", table, tokenizer=None) == [
        'A chat. Next it expects " the". The text so far ends: "…It mentions "x"."']
