"""nla trace: every token's explanation, score, label and claims; chats, continuation, limits, resume, outputs."""

import json

import pytest
from typer.testing import CliRunner

from conftest import CHATML
from nla.autoencoder.nla import NLA
from nla.cli import app
from nla.errors import NLAError
from nla.reading.document import PARTIAL_LOG, SCHEMA, TRACE_HTML, TRACE_JSON, Trace, read_trace
from nla.reading.prompt import Prompt
from nla.reading.render import trace_page
from nla.reading.trace import TraceSettings, trace_to_folder
from nla.record_log import RecordLog
from reading_helpers import FAILED_ANSWER, TEXT, scripted_explain

CHAT = [{"role": "user", "content": "Where do rivers go?"}, {"role": "assistant", "content": "To the sea."}]


def test_every_token_gets_its_score_label_and_claims(reader):
    trace = reader.trace(Prompt(text=TEXT), TraceSettings(min_position=2)).document
    ids = reader.target.encode(TEXT)
    tokens, cal = trace["tokens"], reader.calibration
    assert trace["schema"] == SCHEMA and [t["token_id"] for t in tokens] == ids
    assert [t["traced"] for t in tokens] == [p >= 2 for p in range(len(ids))]
    for t in tokens[2:]:
        if t["status"] == "ok":
            assert t["score"] == pytest.approx(1 - t["mse"] / cal.denominator) and t["label"] == cal.label(t["score"])
            assert t["cosine"] == pytest.approx(1 - t["mse"] / 2) and t["claims"] and t["norm"] > 0
        else:  # failed: what the AV wrote is kept, with the reason
            assert (t["explanation"], t["score"], t["label"]) == (None, None, "failed")
            assert t["answer"] == FAILED_ANSWER and t["failure"] == "cut at the 200-token cap before </explanation>"
    summary = trace["summary"]
    assert summary["traced"] == len(ids) - 2 and sum(summary["labels"].values()) == summary["traced"]
    assert 0 < summary["failed"] < summary["traced"] and summary["claims"]["claims"] > 0
    assert trace["calibration"]["note"] == cal.note and trace["calibration"]["estimated"]


def test_quotes_are_checked_against_the_text_before_each_token(reader):
    trace = reader.trace(Prompt(text=TEXT)).document
    water = next(t["position"] for t in trace["tokens"] if "water" in reader.target.tokenizer.decode(
        [x["token_id"] for x in trace["tokens"][: t["position"] + 1]]))
    seen = {}
    for t in trace["tokens"]:
        for claim in t.get("claims", []):
            for q in claim["quotes"]:
                seen.setdefault((q["text"], t["position"] >= water), set()).add((q["where"], q["flagged"]))
    assert seen[("purple elephants", True)] == {("absent", True)}
    assert seen.get(("carry water", True), {("context", False)}) == {("context", False)}
    assert seen.get(("carry water", False), {("later", True)}) == {("later", True)}


def test_a_chat_is_rendered_with_the_template_and_the_target_can_continue(reader):
    trace = reader.trace(Prompt(messages=CHAT), TraceSettings(continue_tokens=4)).document
    assert trace["input"]["kind"] == "chat" and trace["input"]["text"].startswith("<|im_start|>user")
    assert trace["input"]["text"].rstrip().endswith("<|im_start|>assistant")  # the target's turn comes next
    generated = [t for t in trace["tokens"] if t["generated"]]
    assert 1 <= len(generated) == trace["input"]["continued"] <= 4 and all(t["traced"] for t in generated)
    assert any(t["special"] for t in trace["tokens"])


def test_a_long_input_is_refused_before_any_model_work(reader, monkeypatch):
    monkeypatch.setattr(reader.nla, "activations", lambda *a: pytest.fail("the model ran"))
    monkeypatch.setattr(reader, "continuation", lambda *a: pytest.fail("the model ran"))
    with pytest.raises(NLAError, match="at most 8 are read per request"):
        reader.trace(Prompt(text=TEXT), TraceSettings(max_tokens=8, continue_tokens=2))
    with pytest.raises(NLAError, match="either a text or a chat"):
        Prompt()


def test_an_input_past_the_target_context_is_refused_with_its_length(reader, monkeypatch):
    monkeypatch.setattr(reader.nla, "activations", lambda *a: pytest.fail("the model ran"))
    monkeypatch.setattr(reader, "continuation", lambda *a: pytest.fail("the model ran"))
    monkeypatch.setattr(reader.target.config, "max_position_embeddings", 12)
    tokens = len(reader.target.encode(TEXT))
    with pytest.raises(NLAError, match=rf"the input \({tokens} tokens \+ 3 to continue\) has {tokens + 3} tokens, "
                                       r"more than the 12 of .*'s context; shorten it"):
        reader.trace(Prompt(text=TEXT), TraceSettings(continue_tokens=3))


def test_an_overwrite_killed_while_writing_leaves_no_finished_looking_trace(reader, tmp_path, monkeypatch):
    import nla.reading.document as document_module

    out = tmp_path / "trace"
    trace_to_folder(reader, Prompt(text=TEXT), out, progress=False)
    monkeypatch.setattr(document_module, "write_json", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # killed after the new page, before the new trace.json
        trace_to_folder(reader, Prompt(text=TEXT + " More."), out, overwrite=True, progress=False)
    monkeypatch.undo()
    assert not (out / TRACE_JSON).exists() and (out / TRACE_HTML).exists()


def test_a_killed_trace_resumes_with_the_readings_it_had(reader, tmp_path, monkeypatch):
    out, settings = tmp_path / "trace", TraceSettings(batch_size=8)
    full = trace_to_folder(reader, Prompt(text=TEXT), tmp_path / "reference", settings, progress=False).document
    append = RecordLog.append
    monkeypatch.setattr(RecordLog, "append", lambda self, r: append(self, r) or (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # killed after its first batch
        trace_to_folder(reader, Prompt(text=TEXT), out, settings, progress=False)
    monkeypatch.setattr(RecordLog, "append", append)
    assert len((out / PARTIAL_LOG).read_text().splitlines()) == 1 + 8 and not (out / TRACE_JSON).exists()
    explained = []
    explain = reader.nla.explain
    monkeypatch.setattr(reader.nla, "explain", lambda v, **kw: explained.append(len(v)) or explain(v, **kw))
    resumed = trace_to_folder(reader, Prompt(text=TEXT), out, settings, progress=False).document
    assert sum(explained) == len(full["tokens"]) - 8  # only what was missing
    assert resumed["tokens"] == full["tokens"] and not (out / PARTIAL_LOG).exists()
    with pytest.raises(NLAError, match="--overwrite"):
        trace_to_folder(reader, Prompt(text=TEXT), out, settings, progress=False)


def test_the_page_is_self_contained_and_escapes_what_the_av_wrote(reader, tmp_path):
    trace = reader.trace(Prompt(text=TEXT)).document
    trace["tokens"][0]["explanation"] = "</script><script>alert(1)</script> {{js}}"
    page = trace_page(trace)
    assert "default-src 'none'" in page and "http://" not in page and "https://" not in page
    assert "<script>alert(1)" not in page and page.count("<script") == 3
    embedded = page.split('id="trace-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["tokens"][0]["explanation"].startswith("</script>")


def test_saved_traces_are_checked_when_read(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"schema": "other"}))
    (tmp_path / "b.json").write_text(json.dumps({"schema": SCHEMA, "schema_version": 99}))
    with pytest.raises(NLAError, match="not an nla trace"):
        read_trace(tmp_path / "a.json")
    with pytest.raises(NLAError, match="upgrade nla"):
        read_trace(tmp_path / "b.json")


def test_trace_command_writes_json_and_html(nla_folder, tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(NLA, "explain", scripted_explain)
    (tmp_path / "chat.json").write_text(json.dumps(CHAT))
    base = ["trace", "--nla", str(nla_folder), "--model", str(tiny_llama)]
    sources = ([TEXT], ["--file", str(tmp_path / "chat.json")], ["--chat", str(tmp_path / "chat.json")])
    for i, source in enumerate(sources):
        result = CliRunner().invoke(app, base + source + ["--out", str(tmp_path / f"out{i}")])
        assert result.exit_code == 0, result.output
        assert "traced" in result.output and "quotes:" in result.output and ESTIMATED in result.output
        trace = read_trace(tmp_path / f"out{i}" / TRACE_JSON)
        assert trace["summary"]["traced"] > 0 and (tmp_path / f"out{i}" / TRACE_HTML).exists()
        assert trace["input"]["kind"] == ("chat" if i == 2 else "text")
    again = CliRunner().invoke(app, base + [TEXT, "--out", str(tmp_path / "out0")])
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of"), (["hi", "--file", "x.txt"], "exactly one of"),
    (["--chat", "{missing}.json"], "not found"), (["--chat", "{bad}"], "not valid JSON"),
    (["--chat", "{empty}"], "non-empty JSON list"),
])
def test_bad_trace_input_is_one_line(args, message, nla_folder, tmp_path):
    (tmp_path / "bad.json").write_text("[{")
    (tmp_path / "empty.json").write_text("[]")
    paths = {"{missing}": str(tmp_path / "missing"), "{bad}": str(tmp_path / "bad.json"),
             "{empty}": str(tmp_path / "empty.json")}
    args = [next((a.replace(k, v) for k, v in paths.items() if k in a), a) for a in args]
    result = CliRunner().invoke(app, ["trace", *args, "--nla", str(nla_folder), "--out", str(tmp_path / "o")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], result.output


def test_without_nla_and_without_the_shipped_one_the_commands_say_to_pass_one(tmp_path, monkeypatch):
    """No --nla reads the shipped NLA; an install that lacks it says what to do in one line."""
    import nla.autoencoder.shipped as default

    monkeypatch.setattr(default, "default_dir", lambda: tmp_path / "missing")
    result = CliRunner().invoke(app, ["trace", "hi", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pass --nla" in result.output


ESTIMATED = "estimated on a built-in sample"


def test_position_0_and_high_norm_positions_are_marked_sinks_and_left_out_of_the_mean(reader):
    from nla.reading.trace import SINK_NORM_RATIO, attention_sinks

    trace = reader.trace(Prompt(text=TEXT)).document
    tokens = trace["tokens"]
    norms = sorted(t["norm"] for t in tokens)
    median = norms[len(norms) // 2]
    assert tokens[0]["sink"]
    assert all(t["sink"] == (t["norm"] > SINK_NORM_RATIO * median) for t in tokens[1:])
    kept = [t["score"] for t in tokens if t["score"] is not None and not t["sink"]]
    assert trace["summary"]["mean_score"] == pytest.approx(sum(kept) / len(kept))
    readings = {p: {"norm": 10.0} for p in range(1, 9)} | {5: {"norm": 10.0 * SINK_NORM_RATIO + 1}}
    assert attention_sinks(readings) == {0, 5}


def test_an_unknown_chat_role_is_refused_before_any_model_work():
    with pytest.raises(NLAError, match=r"message 1 of the chat has role 'wizard'; use one of system, user"):
        Prompt(messages=[{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Abracadabra"}])


def test_trace_and_serve_take_every_reading_option(nla_folder, tiny_llama, tmp_path, monkeypatch):
    """The same model, decoding and NLA options as nla explain: --dtype, --temperature, --nla-av / --nla-ar."""
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "trace"
    result = runner.invoke(app, ["trace", "Rivers carry water.", "--out", str(out), "--nla-av", str(nla_folder / "av"),
                                 "--nla-ar", str(nla_folder / "ar"), "--model", str(tiny_llama), "--dtype", "float32",
                                 "--temperature", "0.7", "--max-new-tokens", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    trace = json.loads((out / TRACE_JSON).read_text())
    assert trace["settings"]["temperature"] == 0.7 and trace["settings"]["max_new_tokens"] == 3
    both = runner.invoke(app, ["trace", "Rivers.", "--out", str(tmp_path / "x"), "--nla", str(nla_folder),
                               "--nla-av", str(nla_folder / "av"), "--nla-ar", str(nla_folder / "ar")])
    assert both.exit_code == 2 and "either --nla or --nla-av" in both.output
    for command in ("trace", "serve"):
        helped = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert all(flag in helped.output for flag in ("--dtype", "--temperature", "--nla-av", "--nla-ar", "--model"))


def test_each_traced_token_stores_the_targets_next_tokens_and_predictions_are_checked(reader):
    from nla.models.predictions import next_token_candidates

    trace = reader.trace(Prompt(text=TEXT)).document
    ids = [t["token_id"] for t in trace["tokens"]]
    expected = next_token_candidates(reader.target, [ids], [[3]], k=5)[0][0]
    assert [t["token"] for t in trace["tokens"][3]["next_tokens"]] == [t for t, _ in expected]
    predictions = [q for t in trace["tokens"] if t["traced"] for c in t["claims"] for q in c["quotes"]
                   if q["prediction"]]
    assert predictions and all(isinstance(q["predicted"], bool) for q in predictions)
    tops = {t["position"]: [n["token"].strip().lower() for n in t["next_tokens"]] for t in trace["tokens"] if t["traced"]}
    for t in trace["tokens"]:
        for q in (q for c in t.get("claims") or [] for q in c["quotes"] if q["prediction"]):
            assert q["predicted"] == any(q["text"].lower().startswith(n) for n in tops[t["position"]] if n)
    report = trace["summary"]["claims"]
    assert report["checked_predictions"] == len(predictions)


def test_a_trace_is_typed_and_converts_to_every_form(reader, tmp_path):
    trace = reader.trace("The river runs to the sea")  # a plain string is a text prompt
    assert isinstance(trace, Trace) and trace.document["schema"] == SCHEMA
    tokens = trace.tokens
    assert [t.position for t in tokens] == list(range(len(tokens))) and all(t.traced for t in tokens)
    ok = [t for t in tokens if t.status == "ok"]
    assert ok and all(isinstance(t.explanation, str) and isinstance(t.score, float) and t.label for t in ok)
    assert all(t.claims and "quotes" in t.claims[0] for t in ok)
    assert trace.traced == tokens and trace.summary == trace.document["summary"]
    assert json.loads(trace.to_json()) == trace.document
    assert trace.to_html() == trace_page(trace.document)
    table = trace.to_arrow()
    assert table.num_rows == len(tokens) and table.column("score").to_pylist() == [t.score for t in tokens]
    saved = trace.save(tmp_path / "t")
    assert Trace.read(saved / TRACE_JSON).document == json.loads((saved / TRACE_JSON).read_text())
    assert (saved / TRACE_HTML).exists() and "traced" in repr(trace)


# SmolLM2's rule, in the tiny model's ChatML: a chat without a system message gets the template's own.
DEFAULT_SYSTEM_CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful AI assistant named Tiny."
    "<|im_end|>\n{% endif %}" + CHATML)


def test_a_chat_is_traced_as_given_without_the_templates_default_system_prompt(reader, monkeypatch):
    assert not reader.target.inserts_system_prompt(CHAT)  # plain ChatML adds nothing
    monkeypatch.setattr(reader.target.tokenizer, "chat_template", DEFAULT_SYSTEM_CHATML)
    assert reader.target.inserts_system_prompt(CHAT)
    assert not reader.target.inserts_system_prompt([{"role": "system", "content": "Be brief."}, *CHAT])
    given = reader.trace(Prompt(messages=CHAT)).document["input"]
    assert "named Tiny" not in given["text"] and "Where do rivers go?" in given["text"]
    assert "adds its own system prompt" in given["note"] and given["messages"] == CHAT
    asked = reader.trace(Prompt(messages=CHAT, template_system_prompt=True)).document["input"]
    assert "named Tiny" in asked["text"] and asked["note"] is None
    plain = reader.trace(Prompt(text=TEXT)).document["input"]
    assert plain["note"] is None
