"""The API explainers against a local fake of both APIs (real SDKs, real HTTP, no network)."""

import json

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("anthropic")
pytest.importorskip("openai")

from fake_api_server import FakeAPI, context_of
from nla.cli import app
from nla.errors import NLAError
from nla.explainers.api import (
    CACHE_FILE,
    DEFAULT_MODELS,
    INSTRUCTION,
    ApiExplainer,
    clean_answer,
    prompt_for,
    split_features,
)
from nla.explainers.base import ExplainRequest
from nla.explainers.stage import ExplainDataConfig, explain_data
from nla.layout import sidecar_path

pytestmark = pytest.mark.slow  # a fake API server in a thread, retries with backoff

KEY = "sk-test-secret-0123456789"
BACKENDS = ["anthropic", "openai"]


def requests_for(n: int) -> list[ExplainRequest]:
    return [ExplainRequest(row_id=f"doc{i}:7", context=f"Row {i} talks about item{i} and then", token=" then",
                           next_tokens=((" the", 0.41), (" a", 0.2))) for i in range(n)]


def base_url(api: FakeAPI, backend: str) -> str:
    return api.url if backend == "anthropic" else api.url + "/v1"  # the openai SDK wants /v1 in its base URL


def explainer_for(api, backend, tmp_path, monkeypatch, delays=None, **kw) -> ApiExplainer:
    monkeypatch.setenv("NLA_TEST_KEY", KEY)
    sleep = delays.append if delays is not None else (lambda s: None)  # no real waiting in tests
    return ApiExplainer(backend, base_url=base_url(api, backend), api_key_env="NLA_TEST_KEY",
                        cache_path=tmp_path / CACHE_FILE, progress=False, sleep=sleep, **kw)


def test_answers_are_cleaned_into_features():
    answer = ("Here are the features:\n1. **Topic**: cooking.\n2) A clause\n   goes on here.\n"
              "- The final token is ' the'.")
    assert split_features(answer) == ["Topic: cooking.", "A clause goes on here.", "The final token is ' the'."]
    assert split_features("First feature.\n\nSecond feature.") == ["First feature.", "Second feature."]
    assert clean_answer("Only one feature here.") is None
    assert clean_answer("* one\n* two") == "one\n\ntwo"


@pytest.mark.parametrize("backend", BACKENDS)
def test_explanations_match_rows_and_requests_carry_the_instruction(backend, tmp_path, monkeypatch):
    requests = requests_for(5)
    with FakeAPI() as api:
        explanations = explainer_for(api, backend, tmp_path, monkeypatch).explain(requests)
    for r, text in zip(requests, explanations):
        paragraphs = text.split("\n\n")
        assert len(paragraphs) == 3 and r.context.split()[-1] in paragraphs[-1]  # this row's answer, in order
        assert not any(p[:1].isdigit() or p.startswith("*") for p in paragraphs)
    assert len(api.requests) == len(requests)
    sent = {context_of(rec.prompt) for rec in api.requests}
    assert sent == {r.context for r in requests}
    for rec in api.requests:
        assert INSTRUCTION in rec.prompt and "' the' (41%)" in rec.prompt
        if backend == "anthropic":
            assert rec.path == "/v1/messages" and "anthropic-version" in rec.headers
        else:
            assert rec.path == "/v1/chat/completions"
        assert any(KEY in value for value in rec.headers.values())  # the key from the named variable is used


def test_the_prompt_is_the_same_for_both_backends(tmp_path, monkeypatch):
    prompts = {}
    for backend in BACKENDS:
        with FakeAPI() as api:
            explainer_for(api, backend, tmp_path / backend, monkeypatch).explain(requests_for(1))
        prompts[backend] = api.requests[0].prompt
    assert prompts["anthropic"] == prompts["openai"] == prompt_for(requests_for(1)[0])


def test_requests_run_concurrently(tmp_path, monkeypatch):
    for concurrency in (1, 4):
        with FakeAPI(gather=concurrency) as api:  # waits for `concurrency` requests at once, not for time
            explainer_for(api, "openai", tmp_path / str(concurrency), monkeypatch,
                          concurrency=concurrency).explain(requests_for(8))
        assert api.max_in_flight == concurrency  # 1 is the serial control


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_limits_and_server_errors_are_retried(backend, tmp_path, monkeypatch):
    delays = []
    with FakeAPI() as api:
        api.fail(429, retry_after="7")
        api.fail(500, times=2)
        explainer = explainer_for(api, backend, tmp_path, monkeypatch, delays=delays, concurrency=1)
        explanations = explainer.explain(requests_for(3))
    assert all(explanations)
    assert len(api.requests) == 3 + 3 and len(api.answered()) == 3
    assert delays[0] == 7.0  # the server's retry-after is honoured
    assert 0 < delays[1] < delays[2]  # then exponential backoff
    assert explainer.usage["retries"] == 3 and explainer.usage["api_requests"] == 3


def test_persistent_failure_keeps_the_cache_and_a_rerun_makes_only_the_missing_calls(tmp_path, monkeypatch):
    requests = requests_for(6)
    with FakeAPI() as api:
        api.fail_after = 4
        with pytest.raises(NLAError, match="the anthropic API is failing .*rerun the same command to resume"):
            explainer_for(api, "anthropic", tmp_path, monkeypatch, concurrency=1, max_retries=2).explain(requests)
    first = {context_of(r.prompt) for r in api.answered()}
    assert len(first) == 4 and len(api.requests) == 4 + 3  # the fifth tried once and retried twice
    assert len((tmp_path / CACHE_FILE).read_text().splitlines()) == 4
    with FakeAPI() as healthy:
        explainer = explainer_for(healthy, "anthropic", tmp_path, monkeypatch)
        explanations = explainer.explain(requests)
    assert {context_of(r.prompt) for r in healthy.requests} == {r.context for r in requests} - first
    assert all(explanations) and explainer.usage["cache_hits"] == 4 and explainer.usage["api_requests"] == 2


def test_a_lost_connection_is_retried_then_fails_in_one_line(tmp_path, monkeypatch):
    api = FakeAPI()  # never started: nothing listens on its port
    api._server.server_close()
    delays = []
    with pytest.raises(NLAError, match="openai API is failing \\(connection error after 3 retries\\)"):
        explainer_for(api, "openai", tmp_path, monkeypatch, delays=delays, max_retries=3).explain(requests_for(1))
    assert len(delays) == 3


def test_a_rejected_request_is_not_retried(tmp_path, monkeypatch):
    with FakeAPI() as api:
        api.fail(401)
        with pytest.raises(NLAError, match="HTTP 401"):
            explainer_for(api, "anthropic", tmp_path, monkeypatch).explain(requests_for(1))
    assert len(api.requests) == 1


def test_a_malformed_answer_is_a_counted_failure_and_is_not_asked_again(tmp_path, monkeypatch):
    requests = requests_for(4)
    with FakeAPI() as api:
        api.short_answer_for = "item2 "
        explanations = explainer_for(api, "openai", tmp_path, monkeypatch).explain(requests)
    assert [e is None for e in explanations] == [False, False, True, False]
    with FakeAPI() as again:
        assert explainer_for(again, "openai", tmp_path, monkeypatch).explain(requests) == explanations
    assert again.requests == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_totals_equal_what_the_server_reported(backend, tmp_path, monkeypatch):
    with FakeAPI() as api:
        explainer = explainer_for(api, backend, tmp_path, monkeypatch)
        explainer.explain(requests_for(5))
    assert explainer.usage["input_tokens"] == api.input_tokens > 0
    assert explainer.usage["output_tokens"] == api.output_tokens > 0


def test_a_missing_key_stops_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(NLAError, match=r"needs an API key in \$OPENAI_API_KEY"):
        ApiExplainer("openai", cache_path=tmp_path / CACHE_FILE)
    with pytest.raises(NLAError, match="only for a local server; pass its --base-url"):
        ApiExplainer("openai", api_key_env="none", cache_path=tmp_path / CACHE_FILE)
    with FakeAPI() as api:  # a keyless local server
        explainer = ApiExplainer("openai", api_key_env="none", base_url=api.url + "/v1",
                                 cache_path=tmp_path / CACHE_FILE, progress=False)
        assert all(explainer.explain(requests_for(2)))


def test_a_missing_sdk_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_anthropic(name, *args, **kwargs):
        if name == "anthropic":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_anthropic)
    with pytest.raises(NLAError, match=r"pip install 'nla\[api\]'"):
        ApiExplainer("anthropic", cache_path=tmp_path / CACHE_FILE)


@pytest.fixture()
def dataset(extracted_dataset):
    return extracted_dataset


def test_explain_data_with_an_api_backend(dataset, monkeypatch, caplog):
    caplog.set_level("INFO")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with FakeAPI() as api:
        cfg = ExplainDataConfig(dataset=dataset, explainer="anthropic", base_url=api.url, concurrency=4)
        summary = explain_data(cfg, progress=False)
    out = dataset / "explanations-anthropic"
    calls = 0
    for split in ("ar_sft", "av_sft"):
        table = pq.read_table(out / f"{split}.parquet")
        source = pq.read_table(dataset / f"{split}.parquet")
        counts = summary["splits"][split]
        assert table.num_rows == source.num_rows == counts["explained"] and counts["failed"] == 0
        for row in table.select(["explanation", "detokenized_text_truncated"]).to_pylist():
            words = row["detokenized_text_truncated"].split()
            assert (words[-1] if words else "(blank)") in row["explanation"].split("\n\n")[-1]
        meta = yaml.safe_load(sidecar_path(out / f"{split}.parquet").read_text())
        assert meta["explanations"]["model"] == cfg.api_model
        calls += counts["api_requests"]
    assert calls == len(api.requests) > 0
    assert sum(c["input_tokens"] for c in summary["splits"].values()) == api.input_tokens
    assert sum(c["output_tokens"] for c in summary["splits"].values()) == api.output_tokens
    written = [p for p in out.rglob("*") if p.is_file()]
    assert out / CACHE_FILE in written
    assert not any(KEY in p.read_text(errors="replace") for p in written)  # the key is never stored
    assert json.loads((out / "summary.json").read_text())["config"]["api_key_env"] is None
    assert f"av_sft: {summary['splits']['av_sft']['api_requests']} API requests" in caplog.text
    assert KEY not in caplog.text


def test_explain_data_resumes_from_the_cache_after_an_outage(dataset, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with FakeAPI() as api:
        api.fail_after = 5
        cfg = ExplainDataConfig(dataset=dataset, explainer="anthropic", base_url=api.url, concurrency=1,
                                max_retries=0, splits=("av_sft",))
        with pytest.raises(NLAError, match="API is failing"):
            explain_data(cfg, progress=False)
    assert not (cfg.out / "av_sft.parquet").exists() and not (cfg.out / "summary.json").exists()
    with FakeAPI() as healthy:
        cfg.base_url = healthy.url
        summary = explain_data(cfg, progress=False)
    first, second = ({r.prompt for r in server.answered()} for server in (api, healthy))
    counts = summary["splits"]["av_sft"]
    assert len(first) == counts["cache_hits"] == 5 and first.isdisjoint(second)  # nothing asked twice
    assert counts["api_requests"] == len(healthy.requests) and counts["explained"] == counts["rows"]


def test_command_line(dataset, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    runner = CliRunner()
    missing = runner.invoke(app, ["explain-data", "--dataset", str(dataset), "--explainer", "openai"])
    assert missing.exit_code == 2 and "needs an API key in $OPENAI_API_KEY" in missing.output
    monkeypatch.setenv("MY_KEY", KEY)
    with FakeAPI() as api:
        result = runner.invoke(app, ["explain-data", "--dataset", str(dataset), "--splits", "av_sft",
                                     "--explainer", "openai", "--base-url", api.url + "/v1", "--api-key-env",
                                     "MY_KEY", "--api-model", "local-model", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    assert "av_sft: rows" in result.stdout and "input_tokens" in result.stdout
    assert {r.body["model"] for r in api.requests} == {"local-model"}
    assert KEY not in result.output


def test_api_settings_are_validated(tmp_path):
    assert ExplainDataConfig(dataset=tmp_path, explainer="openai").api_model == DEFAULT_MODELS["openai"]
    assert ExplainDataConfig(dataset=tmp_path).api_model is None  # the offline explainer has no model
    with pytest.raises(NLAError, match="concurrency must be at least 1"):
        ExplainDataConfig(dataset=tmp_path, explainer="openai", concurrency=0)
    with pytest.raises(NLAError, match="max-retries must be 0 or more"):
        ExplainDataConfig(dataset=tmp_path, explainer="openai", max_retries=-1)
    with pytest.raises(NLAError, match="is not an http"):
        ExplainDataConfig(dataset=tmp_path, explainer="openai", base_url="localhost:8000")
