"""nla serve's JSON API: answers, limits before model work, JSON errors that leave it serving, safe saved traces."""

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from conftest import build_tiny_nla  # noqa: E402
from nla.cli import app as cli  # noqa: E402
from nla.reading.document import SCHEMA  # noqa: E402
from nla.reading.prompt import Prompt  # noqa: E402
from nla.reading.trace import trace_to_folder  # noqa: E402
from nla.viewer.app import ServeLimits, create_app  # noqa: E402
from reading_helpers import TEXT, scripted_reader  # noqa: E402

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama):
    """A scripted tiny NLA behind the app, a traces folder holding one saved trace, and a secret in the env."""
    root = tmp_path_factory.mktemp("serve")
    patch = pytest.MonkeyPatch()
    patch.setenv("NLA_CACHE_DIR", str(root / "cache"))
    patch.setenv("ANTHROPIC_API_KEY", SECRET)
    reader = scripted_reader(build_tiny_nla(root / "nla", tiny_llama), tiny_llama)
    traces = root / "traces"
    trace_to_folder(reader, Prompt(text="Rivers carry water."), traces / "rivers", progress=False)
    (root / "outside.json").write_text(json.dumps({"schema": SCHEMA, "schema_version": 1}))
    (traces / "escape.json").symlink_to(root / "outside.json")
    (traces / "notes.txt").write_text("not a trace")
    yield reader, traces
    patch.undo()


@pytest.fixture(scope="module")
def client(served):
    reader, traces = served
    app = create_app(reader, traces, limits=ServeLimits(max_tokens=64, max_continue=4, max_positions=3))
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


def test_health_names_the_nla_and_its_calibration(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["nla"]["layer"] == 1 and health["calibration"]["estimated"]
    assert "estimated on a built-in sample" in health["calibration"]["note"] and health["limits"]["max_tokens"] == 64


def test_trace_and_explain_give_the_same_figures(client):
    trace = client.post("/api/trace", json={"text": TEXT, "continue_tokens": 2}).json()
    assert trace["schema"] == SCHEMA and trace["input"]["continued"] <= 2 and trace["summary"]["traced"] > 0
    last = len(trace["tokens"]) - trace["input"]["continued"] - 1
    explained = client.post("/api/explain", json={"text": TEXT, "positions": [3, -1]}).json()
    assert [t["position"] for t in explained["tokens"]] == [3, last]
    for token in explained["tokens"]:
        same = trace["tokens"][token["position"]]
        # The two routes batch their reconstructions differently: figures equal up to fp32 reduction order
        # (they differed in the 7th digit on one CPU), the texts and labels exactly.
        assert (token["label"], token["explanation"]) == (same["label"], same["explanation"])
        assert [token["score"], token["mse"]] == pytest.approx([same["score"], same["mse"]], rel=1e-4)
        assert [{**c, "weight": None} for c in token["claims"]] == [{**c, "weight": None} for c in same["claims"]]
        assert [c["weight"] for c in token["claims"]] == pytest.approx([c["weight"] for c in same["claims"]], rel=1e-4)
    chat = client.post("/api/explain", json={"messages": [{"role": "user", "content": "Hi there"}]}).json()
    assert chat["tokens"][0]["position"] == chat["tokens_in_text"] - 1


@pytest.mark.parametrize("body, status, message", [
    ({"text": "x" * 70_000}, 413, "over 65536 bytes"),
    ({"text": TEXT * 4}, 400, "at most 64 are read"),
    ({"text": TEXT, "continue_tokens": 9}, 400, "at most 4 per request"),
    ({"text": 3}, 422, "text: Input should be a valid string"),
    ({"text": TEXT, "debug": True}, 422, "debug: Extra inputs are not permitted"),
    ({}, 400, "either a text or a chat"),
    ({"messages": []}, 400, "non-empty JSON list"),
    ({"messages": [{"role": "user"}]}, 422, "messages.0.content: Field required"),
    ({"text": "   "}, 400, "the text is empty"),
])
def test_bad_trace_requests_get_a_json_4xx_before_any_model_work(client, served, body, status, message,
                                                                 monkeypatch):
    reader, _ = served
    monkeypatch.setattr(reader.nla, "activations", lambda *a: pytest.fail("the model ran"))
    response = client.post("/api/trace", json=body)
    assert response.status_code == status and message in response.json()["error"], response.text


def test_limits_on_explain_and_raw_bodies(client, served, monkeypatch):
    monkeypatch.setattr(served[0].nla, "activations", lambda *a: pytest.fail("the model ran"))
    assert client.post("/api/explain", json={"text": TEXT, "positions": [1, 2, 3, 4]}).status_code == 400
    assert "outside" in client.post("/api/explain", json={"text": "Hi", "positions": [99]}).json()["error"]
    broken = client.post("/api/trace", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["error"] == "body: JSON decode error"

    def chunks():  # no Content-Length: the stream is counted as it arrives
        for _ in range(80):
            yield b" " * 1024

    streamed = client.post("/api/trace", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "over 65536 bytes" in streamed.json()["error"]


def test_a_failing_request_is_a_json_500_and_the_server_keeps_serving(client, served, monkeypatch, caplog):
    monkeypatch.setattr(served[0], "trace", lambda *a: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="nla.serve"):
        broken = client.post("/api/trace", json={"text": TEXT})
    assert broken.status_code == 500 and broken.json() == {"error": "internal error; the server log has the details"}
    assert "ZeroDivisionError" in caplog.text
    monkeypatch.undo()
    assert client.post("/api/trace", json={"text": "Hi there"}).status_code == 200


def test_when_the_queue_is_full_requests_get_503(served):
    reader, traces = served
    app = create_app(reader, traces, limits=ServeLimits(max_queue=1))
    gate, started = threading.Event(), threading.Event()
    original = reader.explain
    reader.explain = lambda *a: started.set() or gate.wait(30) and original(*a)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            first = threading.Thread(target=client.post, args=("/api/explain",), kwargs={"json": {"text": TEXT}})
            first.start()
            assert started.wait(30)
            busy = client.post("/api/explain", json={"text": TEXT})
            gate.set()
            first.join(30)
    finally:
        del reader.explain
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5" and "busy" in busy.json()["error"]


def test_saved_traces_open_only_from_the_traces_folder(client):
    listing = client.get("/api/traces").json()
    assert listing == {"folder": "traces", "traces": ["rivers/trace.json"]}
    assert client.get("/api/traces/rivers/trace.json").json()["schema"] == SCHEMA
    for name in ("..%2Foutside.json", "%2e%2e/%2e%2e/etc/passwd", "%2Fetc%2Fpasswd", "escape.json", "notes.txt",
                 "rivers", "missing/trace.json", "rivers/trace.json%00.json"):
        response = client.get(f"/api/traces/{name}")
        assert response.status_code == 404, name
        assert response.json() == {"error": "no saved trace by that name in the traces folder"}


def test_pages_are_local_and_carry_no_secrets(client, caplog):
    with caplog.at_level(logging.DEBUG):
        pages = {path: client.get(path) for path in ("/", "/api/docs", "/static/viewer.js", "/static/viewer.css",
                                                     "/static/app.js", "/static/api.js", "/api/openapi.json",
                                                     "/api/health", "/api/traces", "/search", "/static/search.js")}
    for path, response in pages.items():
        assert response.status_code == 200, path
        assert SECRET not in response.text and "https://" not in response.text and "http://" not in response.text
        assert "default-src 'none'" in response.headers["content-security-policy"]
    assert SECRET not in caplog.text
    assert set(pages["/api/openapi.json"].json()["paths"]) == {"/api/health", "/api/trace", "/api/explain",
                                                              "/api/traces", "/api/traces/{name}", "/api/search",
                                                              "/api/search/reading", "/api/steer"}
    assert client.get("/static/app.py").status_code == 404 and client.get("/docs").status_code == 404


def test_other_host_names_are_refused(client):
    response = client.get("/api/health", headers={"host": "attacker.example"})
    assert response.status_code == 400 and "unexpected Host" in response.json()["error"]


def test_no_pickle_in_the_reader_or_the_viewer():
    src = Path(__file__).parents[2] / "src" / "nla"
    for path in [*src.joinpath("reading").rglob("*.py"), *src.joinpath("viewer").rglob("*.py")]:
        text = path.read_text()
        assert "pickle" not in text and "torch.load" not in text, path


@pytest.mark.slow  # a subprocess
def test_the_viewer_stays_out_of_the_core_import_graph():
    code = ("import sys, nla, nla.cli, nla.reading.trace, nla.reading.render; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette') "
            "or m.startswith('nla.viewer')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_serve_without_the_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(cli, ["serve", "--nla", str(tmp_path)])
    assert result.exit_code == 2 and result.output.strip() == \
        "error: nla serve needs the serve extra (uvicorn is missing); run: pip install 'nla[serve]'"


def test_serve_warns_off_loopback_and_refuses_a_taken_port(served, tmp_path, monkeypatch):
    import socket

    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append(kw))
    monkeypatch.setattr("nla.reading.trace.Reader.load", classmethod(lambda cls, *a, **k: served[0]))
    result = CliRunner().invoke(cli, ["serve", "--nla", "x", "--host", "0.0.0.0", "--port", "8765",
                                      "--traces", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning: binding 0.0.0.0" in result.output and runs == [{"host": "0.0.0.0", "port": 8765,
                                                                     "log_level": "warning"}]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = CliRunner().invoke(cli, ["serve", "--nla", "x", "--port", str(port), "--traces", str(tmp_path)])
    assert busy.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.output
    missing = CliRunner().invoke(cli, ["serve", "--nla", "x", "--traces", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "is not a folder" in missing.output


@pytest.mark.parametrize("path, body", [
    ("/api/explain", {"text": "Rivers \ud800 carry"}),
    ("/api/trace", {"text": "\udcff\udcfe"}),
    ("/api/trace", {"messages": [{"role": "user", "content": "Hi \ud800"}]}),
])
def test_text_that_is_not_valid_unicode_is_a_400_not_a_500(client, path, body):
    raw = json.dumps(body)  # escapes the surrogate as \\ud800, as a client's JSON would
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid Unicode" in response.json()["error"]


def test_steer_answers_as_the_library_does_and_refuses_bad_input(client, served):
    from nla.reading.prompt import Prompt
    from nla.reading.steer import SteerSettings, steer

    body = {"text": TEXT, "position": 4, "explanation": "A text about music.", "alphas": [2.0], "max_new_tokens": 4}
    answer = client.post("/api/steer", json=body)
    assert answer.status_code == 200, answer.text
    expected = steer(served[0], Prompt(text=TEXT), SteerSettings(alphas=(2.0,), position=4, max_new_tokens=4),
                     explanation="A text about music.")
    assert answer.json()["runs"] == expected["runs"] and answer.json()["edited"] == "A text about music."
    for change, status, message in (({"alphas": [99.0]}, 400, "--alpha"), ({"alphas": []}, 422, "alphas"),
                                    ({"edit": "zebra=>mouse", "explanation": None}, 400, "FROM 'zebra'"),
                                    ({"edit": "rivers"}, 400, "is not FROM=>TO"),
                                    ({"max_new_tokens": 500}, 400, "at most"), ({"position": 999}, 400, "outside")):
        refused = client.post("/api/steer", json={**body, **change})
        assert refused.status_code == status and message in refused.json()["error"], (change, refused.text)
