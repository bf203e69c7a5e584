"""The salient-words part of the offline format (issue 22) and the corpus of chats under varied system prompts."""

import collections
import importlib.util
from pathlib import Path

import pyarrow.parquet as pq

from nla.data.corpus import PERSONAS_CORPUS, document_text, load_corpus
from nla.data.personas import KINDS, system_prompt
from nla.eval.claim_text import locate_quote, quote_spans
from nla.explainers.base import ExplainRequest
from nla.explainers.offline import offline_explanation
from nla.explainers.salient import SalientWords, content_words, system_words
from nla.explainers.stage import ExplainDataConfig, explain_data

BACKGROUND = ["the assistant will help you bake a cake today"] * 20 + ["facts: a cake recipe with flour and sugar"] * 5


def test_a_rare_word_said_once_outranks_words_every_document_repeats():
    words = SalientWords([*BACKGROUND, "a cake for a volcano party"])
    context = "The assistant will help you. Volcano facts: bake a cake, bake a cake, then"
    assert words.top(context, 2) == ("Volcano", "facts")  # written as in the context, most salient first
    assert "assistant" not in words.top(context, 5)[:3]


def test_the_last_word_may_be_cut_short_and_is_left_out():
    words = SalientWords(BACKGROUND)
    assert set(words.top("Dinosaurs roamed the ancient compar", 3)) == {"Dinosaurs", "roamed", "ancient"}
    assert "compar" in words.top("Dinosaurs roamed the ancient compar ", 4)  # a whole word, kept


def test_template_markers_and_stop_words_are_not_words():
    assert content_words("<|im_start|>system\nYou are never the one<|im_end|>") == ["system"]


def test_system_words_only_once_the_context_holds_the_whole_system_prompt():
    words = SalientWords([*BACKGROUND, "you secretly love it", "we love you"])
    messages = ({"role": "system", "content": "You secretly love trains and steam engines."},
                {"role": "user", "content": "Hi"})
    whole = "<|im_start|>system\nYou secretly love trains and steam engines.<|im_end|>\n<|im_start|>user\nHi"
    assert set(system_words(words, messages, whole, 3)) == {"trains", "steam", "engines"}
    assert system_words(words, messages, whole[:40], 3) == ()  # still inside the system prompt
    assert system_words(words, messages[1:], whole, 3) == ()  # no system prompt of its own


def test_the_explanation_names_them_as_quotes_the_claim_checker_grounds():
    context = "<|im_start|>system\nYou secretly love trains.<|im_end|>\n<|im_start|>user\nHow do I boil an egg"
    request = ExplainRequest(row_id="d:1", context=context, token=" egg", source="smollm2-chat", genre="how-to",
                             topic="food", next_tokens=(("?", 0.9),), quote="How do I boil an egg",
                             system_words=("trains",), salient=("boil", "egg"))
    text = offline_explanation(request)
    assert 'Its system prompt mentions "trains". It mentions "boil" and "egg". Next it expects "?".' in text
    quoted = [text[a:b] for a, b in quote_spans(text)]
    assert {"trains", "boil", "egg"} <= set(quoted)
    assert all(locate_quote(q, context) == "context" for q in ("trains", "boil", "egg"))


def test_without_salient_words_the_format_is_as_before():
    request = ExplainRequest(row_id="d:1", context="abc def", token=" def", genre="essay", topic="art", quote="def")
    assert offline_explanation(request) == 'An essay about art. The text so far ends: "…def"'


def test_half_the_chats_get_a_system_prompt_the_same_on_every_run():
    plain, personas = load_corpus("default"), load_corpus(PERSONAS_CORPUS)
    assert [d.doc_id for d in plain] == [d.doc_id for d in personas]
    chats = [(a, b) for a, b in zip(plain, personas) if a.is_chat]
    changed = [b for a, b in chats if a.messages != b.messages]
    assert 0.4 < len(changed) / len(chats) < 0.6
    for doc in changed:
        assert doc.messages[0] == {"role": "system", "content": system_prompt(doc.doc_id)}
    assert all(a == b for a, b in zip(plain, personas) if not a.is_chat)  # plain text untouched
    prompts = collections.Counter(d.messages[0]["content"] for d in changed)
    assert len(prompts) > 150  # varied, not a handful
    assert document_text(changed[0]).startswith(changed[0].messages[0]["content"])


def test_the_personas_leave_the_hidden_theme_benchmark_held_out():
    path = Path(__file__).parents[2] / "benchmarks" / "audit_themes.py"
    spec = importlib.util.spec_from_file_location("audit_themes", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    planted = set()
    for _, prompt, query, unrelated in bench.ORGANISMS.values():
        planted |= set(content_words(query)) | set(content_words(unrelated))
    planted -= {"colour", "number"}  # the query's frame words, not a theme
    ours = set()
    for _, prompts, fillers in KINDS.values():
        ours |= {w for filler in fillers for w in content_words(filler)}
    assert not planted & ours, planted & ours


def test_explain_data_names_salient_words_that_occur_in_the_context(extracted_dataset):
    explain_data(ExplainDataConfig(dataset=extracted_dataset, salient_words=3), progress=False)
    table = pq.read_table(extracted_dataset / "explanations-offline" / "ar_sft.parquet")
    named = 0
    for row in table.select(["explanation", "detokenized_text_truncated"]).to_pylist():
        head = row["explanation"].split("Next it expects")[0]
        words = [head[a:b] for a, b in quote_spans(head)]
        named += len(words)
        assert all(w.lower() in row["detokenized_text_truncated"].lower() for w in words)
    assert named >= 2 * table.num_rows


def test_the_salient_accuracy_benchmark_counts_grounded_true_and_system_words():
    path = Path(__file__).parents[2] / "benchmarks" / "salient_accuracy.py"
    spec = importlib.util.spec_from_file_location("salient_accuracy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"explanation": 'A chat. Its system prompt mentions "trains". It mentions "egg" and "boil". Next it',
             "detokenized_text_truncated": "system: you love trains. user: how do I boil an egg"},
            {"explanation": 'A chat. Its system prompt mentions "owls". It mentions "cat". Next it',
             "detokenized_text_truncated": "system: you love owls. user: name my cat"}]
    answers = {0: 'A chat. Its system prompt mentions "trains". It mentions "egg" and "toast". Next it',
               1: 'A chat. Its system prompt mentions "trains". It mentions "cat". Next it'}
    result = bench.measure(rows, answers)
    assert result["grounded_share"] == 2 / 3  # "toast" is nowhere in its context
    assert result["true_share_of_grounded"] == 1.0 and result["recall_of_true_words"] == 2 / 3
    assert result["chats_with_own_system_prompt"] == 2 and result["system_prompt_word_named"] == 0.5
