"""nla steer: the residual hook, edits, settings, the steering document, the command's refusals."""

import json

import pytest
import torch
from typer.testing import CliRunner

from nla.autoencoder.nla import NLA
from nla.cli import app
from nla.errors import NLAError
from nla.layout import STEER_HTML, STEER_JSON
from nla.models.activations import hidden_at_layer
from nla.models.steering import residual_added
from nla.models.target import load_target
from nla.reading.prompt import Prompt
from nla.reading.steer import Edit, SteerSettings, steer
from nla.reading.steer_effect import ARMS, SteerCase, first_tokens, load_cases, mentions, steering_effect
from reading_helpers import SCRIPT, TEXT, scripted_explain


@pytest.fixture(scope="module")
def target(tiny_llama):
    return load_target(str(tiny_llama))


def test_the_vector_is_added_at_the_token_or_from_it_on(target):
    ids = torch.tensor([target.encode(TEXT)[:8]])
    mask, vector = torch.ones_like(ids), torch.randn(target.d_model)
    plain = hidden_at_layer(target.model, target.layers, ids, mask, 1)
    for later, changed in ((False, [3]), (True, [3, 4, 5, 6, 7])):
        with residual_added(target.layers, 1, vector, 3, later=later):
            steered = hidden_at_layer(target.model, target.layers, ids, mask, 1)
        diff = (steered - plain)[0]
        assert [p for p in range(8) if diff[p].abs().max() > 0] == changed
        assert torch.allclose(diff[3], vector, atol=1e-5)


def test_decoding_with_a_cache_steers_as_a_plain_forward_does(target):
    ids = target.encode(TEXT)[:6]
    vector = torch.randn(target.d_model) * 30
    for later in (False, True):
        with residual_added(target.layers, 1, vector, 5, later=later):
            out = target.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=4, do_sample=False,
                                        pad_token_id=target.pad_id)[0].tolist()
        with residual_added(target.layers, 1, vector, 5, later=later):  # one sequence per block: it counts tokens
            logits = target.model(input_ids=torch.tensor([out]), use_cache=False).logits[0]
        # Each generated token is the argmax of a plain forward over the whole sequence steered the same way.
        assert out[6:] == logits[5:-1].argmax(-1).tolist(), later


def test_edits_parse_and_apply_or_say_what_is_wrong():
    edit = Edit.parse(" rabbit => mouse ")
    assert edit == Edit("rabbit", "mouse") and edit.apply("a rabbit, a rabbit", "here") == "a mouse, a mouse"
    for spec in ("rabbit", "=>mouse", "a=>b=>c"):
        with pytest.raises(NLAError, match="is not FROM=>TO"):
            Edit.parse(spec)
    with pytest.raises(NLAError, match="FROM 'rabbit' is not in the explanation at position 3"):
        edit.apply("about cats", "at position 3")
    for alphas in ((100.0,), (float("nan"),), ()):
        with pytest.raises(NLAError, match="--alpha"):
            SteerSettings(alphas=alphas)


def test_steer_writes_continuations_per_alpha_reproducibly(reader):
    settings = SteerSettings(alphas=(1.0, 8.0), position=4, max_new_tokens=5)
    first = steer(reader, Prompt(text=TEXT), settings, explanation="A text about music and songs.")
    again = steer(reader, Prompt(text=TEXT), settings, explanation="A text about music and songs.")
    assert first["runs"] == again["runs"]  # greedy and seeded sampling: the same text twice
    assert [r["alpha"] for r in first["runs"]] == [0.0, 1.0, 8.0]
    assert first["explanation"] in SCRIPT and first["edited"] == "A text about music and songs."
    assert first["vector_norm"] > 0 and first["where"] == "the read token only"
    assert all(r[k]["perplexity"] > 0 for r in first["runs"] for k in ("greedy", "sampled"))


@pytest.mark.slow  # six cases x three directions x two alphas of generation
def test_the_effect_is_measured_for_the_edit_and_both_controls(reader):
    texts = [TEXT[:n] for n in (20, 30, 40, 50, 60, 70)]
    cases = [SteerCase(kind="topic", text=t, topic="music", to=["music", "song"]) for t in texts]
    report = steering_effect(reader, cases, SteerSettings(alphas=(2.0, 8.0), max_new_tokens=3))
    assert report["cases"] == 6 and report["edited"] + len(report["skipped"]) == 6
    assert report["edited"] >= 2  # the scripted AV writes "about ..." in two of its three explanations
    assert all(s["explanation"] is None or "about " not in s["explanation"] for s in report["skipped"])
    for row in report["table"]:
        assert set(row) == {"alpha", "edit_beats", *ARMS} and set(row["edit_beats"]) == {"random", "unrelated"}
        for arm in ARMS:
            assert 0 <= row[arm]["success"] <= 1 and row[arm]["perplexity"] > 0
    for result in report["results"]:
        rises = [result["arms"][arm][1]["logprob_rise"] for arm in ARMS]
        assert all(r != 0 for r in rises) and len(set(rises)) == 3  # three different directions, each acting


def test_the_builtin_set_has_twenty_varied_cases_whose_words_tokenize(reader):
    cases = load_cases()
    assert len(cases) >= 20 and {c.kind for c in cases} == {"word", "prediction", "topic", "sentiment"}
    assert all(first_tokens(reader.target.tokenizer, c.to) for c in cases)
    topic = next(c for c in cases if c.topic)
    assert topic.edit_for("A chat asking for a poem about gardening.").after == f"about {topic.topic}"
    assert mentions("The Mouse ran.", ["mouse"]) and not mentions("mousetrap", ["mouse"])


def errors_of(result):
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_bad_steer_input_is_one_error_line_and_writes_nothing(nla_folder, tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(NLA, "explain", scripted_explain)
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "steer"
    base = ["steer", TEXT, "--out", str(out), "--nla", str(nla_folder), "--model", str(tiny_llama),
            "--max-new-tokens", "4"]
    cases = [
        (["--edit", "rabbit"], "is not FROM=>TO"),
        (["--edit", "zebra=>mouse", "--position", "4"], "FROM 'zebra' is not in the explanation"),
        (["--edit", "a=>b", "--alpha", "1,99"], "--alpha"),
        (["--edit", "a=>b", "--alpha", "one"], "not a comma-separated list"),
        ([], "exactly one of --edit"),
        (["--edit", "a=>b", "--max-new-tokens", "5000"], "more than the"),
        (["--explanation-file", str(tmp_path / "none.txt")], "not found"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, [*base, *args])
        assert result.exit_code == 2 and len(errors_of(result)) == 1, (args, result.output)
        assert message in errors_of(result)[0], (args, result.output)
        assert not out.exists(), args
    explanation = tmp_path / "edited.txt"
    explanation.write_text("A text about music.")
    result = CliRunner().invoke(app, [*base, "--explanation-file", str(explanation), "--alpha", "2", "--position",
                                      "4"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / STEER_JSON).read_text())
    assert doc["edited"] == "A text about music." and "<table>" in (out / STEER_HTML).read_text()
    again = CliRunner().invoke(app, [*base, "--explanation-file", str(explanation)])
    assert again.exit_code == 2 and "already holds a steering run" in errors_of(again)[0]
