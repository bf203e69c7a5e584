"""A local stand-in for the Anthropic Messages and OpenAI chat completions APIs.

It runs http.server in a thread, answers in each API's real JSON shapes, records every
request, and fails on demand (429 with retry-after, 500, an answer too short to keep),
so the real SDKs can be pointed at it with base_url:

    with FakeAPI() as api:
        anthropic.Anthropic(api_key="k", base_url=api.url)          # POST /v1/messages
        openai.OpenAI(api_key="k", base_url=api.url + "/v1")         # POST /v1/chat/completions
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict
    status: int = 0  # what the fake answered
    at: float = field(default_factory=time.monotonic)

    @property
    def prompt(self) -> str:
        content = self.body["messages"][-1]["content"]
        return content if isinstance(content, str) else "".join(b["text"] for b in content)


def context_of(prompt: str) -> str:
    """The text between the <<< >>> fences of an nla prompt."""
    return re.search(r"<<<\n(.*)\n>>>", prompt, re.DOTALL).group(1)


def good_answer(prompt: str) -> str:
    """Three numbered features; the last one quotes the context's last word, so answers match rows."""
    last = context_of(prompt).split()[-1] if context_of(prompt).split() else "(blank)"
    return ("Here are the features:\n"
            "1. **Topic**: the passage keeps to one subject.\n"
            "2. The sentence is partway through a clause\n   that continues on this line.\n"
            f"3. The final token closes on \"{last}\" and the next words must follow it.")


GATHER_TIMEOUT = 10.0  # seconds


class FakeAPI:
    def __init__(self, answer=good_answer, gather: int = 1):
        self.answer = answer  # prompt -> answer text
        # Answer nothing until this many requests have been in flight at once (or GATHER_TIMEOUT passed): a
        # client that overlaps its requests gets there however slow the machine is; a serial one never does.
        self.gather = gather
        self.requests: list[Recorded] = []
        self.planned: list[tuple[int, dict]] = []  # failures for the next requests, in order
        self.fail_after: int | None = None  # answer this many requests, then fail every one with 500
        self.short_answer_for: str | None = None  # contexts containing this get a one-feature answer
        self.input_tokens = self.output_tokens = 0  # totals of the usage the server reported
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        self.planned.extend([(status, headers)] * times)

    def answered(self) -> list[Recorded]:
        return [r for r in self.requests if r.status == 200]

    def __enter__(self) -> FakeAPI:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _respond(self, path: str, headers: dict, body: dict) -> tuple[int, dict, dict]:
        with self._lock:
            record = Recorded(path, headers, body)
            self.requests.append(record)
            answered = len(self.answered())
            if self.planned:
                status, extra = self.planned.pop(0)
            elif self.fail_after is not None and answered >= self.fail_after:
                status, extra = 500, {}
            else:
                status, extra = 200, {}
            record.status = status
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._lock.notify_all()
        try:
            with self._lock:
                self._lock.wait_for(lambda: self.max_in_flight >= self.gather, timeout=GATHER_TIMEOUT)
            if status != 200:
                return status, extra, _error_body(path, status)
            prompt = record.prompt
            text = self.answer(prompt)
            if self.short_answer_for and self.short_answer_for in context_of(prompt):
                text = "Only one feature here."
            usage_in, usage_out = len(prompt.split()), len(text.split())
            with self._lock:
                self.input_tokens += usage_in
                self.output_tokens += usage_out
            return 200, {}, _reply_body(path, body["model"], text, usage_in, usage_out)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path not in ("/v1/messages", "/v1/chat/completions"):
                    status, extra, payload = 404, {}, {"error": {"message": f"no route {self.path}"}}
                elif self.path == "/v1/messages" and "anthropic-version" not in headers:
                    status, extra, payload = 400, {}, _error_body(self.path, 400)
                else:
                    status, extra, payload = fake._respond(self.path, headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                pass

        return Handler


def _reply_body(path: str, model: str, text: str, usage_in: int, usage_out: int) -> dict:
    if path == "/v1/messages":
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": usage_in, "output_tokens": usage_out}}
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out,
                      "total_tokens": usage_in + usage_out}}


def _error_body(path: str, status: int) -> dict:
    kind = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}.get(status, "invalid_request_error")
    if path == "/v1/messages":
        return {"type": "error", "error": {"type": kind, "message": f"fake {status}"}}
    return {"error": {"message": f"fake {status}", "type": kind, "code": None}}
