"""API explainers: a strong chat model writes each warm-start explanation.

    nla explain-data --dataset runs/acts --explainer anthropic           # ANTHROPIC_API_KEY
    nla explain-data --dataset runs/acts --explainer openai               # OPENAI_API_KEY
    nla explain-data --dataset runs/acts --explainer openai --api-model llama3.1 \
        --base-url http://localhost:11434/v1 --api-key-env none           # a local OpenAI-compatible server

Both backends send the same instruction (INSTRUCTION, versioned by INSTRUCTION_VERSION):
the text up to the activation's token, the target's own next-token candidates, and a
request for the 2-3 features that matter most for predicting what follows. Answers are
cleaned of list markers; an answer with fewer than two features counts as a failure.

Every answer is appended to OUT/.cache/explanations.jsonl as soon as it arrives, keyed
by a hash of backend, model, instruction version and the prompt, so a rerun after a
kill or an outage makes no repeat calls. Rate limits, server errors and lost
connections are retried with exponential backoff; when retries run out the run stops
with one error line and the cache keeps what was done.

The SDKs (`anthropic`, `openai`) are an extra: pip install 'nla[api]'.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from nla.errors import NLAError
from nla.explainers.base import ExplainRequest
from nla.record_log import append_records, complete_records

DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1-mini"}
DEFAULT_KEY_ENVS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
NO_KEY = "none"  # --api-key-env none: a local server that needs no key
DEFAULT_CONCURRENCY = 8  # requests in flight
DEFAULT_MAX_RETRIES = 6  # per request; backoff 1, 2, 4 ... 32 s, about a minute in all
CACHE_FILE = Path(".cache") / "explanations.jsonl"

INSTRUCTION_VERSION = "features-v1"  # change it whenever INSTRUCTION or the prompt layout changes
INSTRUCTION = """\
We are collecting descriptions of what a language model has in mind at one point in a text.
Below is a text that stops right after its final token. Pick the 2 or 3 features of the text
so far that matter most for predicting what comes next, and describe each in a sentence or two.
Use about 80 to 100 words in total. Write the features as plain paragraphs separated by a blank
line, with no title, numbering or bullet points, and nothing before or after them. Make the last
feature about the final token itself: what kind of token it is and what has to come after it."""
MIN_FEATURES = 2
MAX_ANSWER_TOKENS = 400  # ~100 words need ~150 tokens; the rest is slack, not a target

REQUEST_TIMEOUT_S = 120.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0

# A line that opens a new feature: bullets, "1." / "2)" / "(a)", or a "Feature 1:" label.
LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022+]|\(?\d+[.)]|\([a-z]\)|[a-z]\)|#+|feature\s*\d+\s*[:.\-\u2013\u2014])\s*",
                         re.IGNORECASE)


def prompt_for(r: ExplainRequest) -> str:
    """The one user message both backends send for a request."""
    lines = [INSTRUCTION, "", "Text:", "<<<", r.context, ">>>", f"Final token: {r.token!r}"]
    if r.next_tokens:
        # Rounded so the prompt (and the cache key) does not change with tiny numeric noise.
        candidates = ", ".join(f"{t!r} ({p:.0%})" for t, p in r.next_tokens)
        lines.append(f"The model's own most likely next tokens: {candidates}")
    return "\n".join(lines)


def split_features(answer: str) -> list[str]:
    """The answer's features as single paragraphs, list markers and bold marks removed."""
    features, current = [], []
    for line in answer.replace("**", "").splitlines():
        marked = LIST_MARKER.match(line)
        if marked or not line.strip():
            if current:
                features.append(" ".join(current))
            current = []
        text = line[marked.end():] if marked else line
        if text.strip():
            current.append(text.strip())
    if current:
        features.append(" ".join(current))
    if len(features) > 1 and features[0].endswith(":"):
        features = features[1:]  # a preamble such as "Here are the features:"
    return features


def clean_answer(answer: str) -> str | None:
    """Features joined as paragraphs, or None when fewer than MIN_FEATURES came back."""
    features = split_features(answer)
    return "\n\n".join(features) if len(features) >= MIN_FEATURES else None


@dataclass(frozen=True)
class Reply:
    text: str
    complete: bool  # False when the model hit the token cap mid-answer
    input_tokens: int
    output_tokens: int


class AnthropicChat:
    """POST /v1/messages through the anthropic SDK."""

    def __init__(self, sdk, api_key: str, model: str, base_url: str | None):
        self.sdk, self.model = sdk, model
        # Retries are ours (counted, with jitter), so the SDK's own are off.
        self.client = sdk.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=REQUEST_TIMEOUT_S)

    def complete(self, prompt: str) -> Reply:
        message = self.client.messages.create(model=self.model, max_tokens=MAX_ANSWER_TOKENS,
                                              messages=[{"role": "user", "content": prompt}])
        text = "".join(block.text for block in message.content if block.type == "text")
        return Reply(text, message.stop_reason != "max_tokens", message.usage.input_tokens,
                     message.usage.output_tokens)


class OpenAIChat:
    """POST /chat/completions through the openai SDK (OpenAI, vLLM, Ollama, any compatible server)."""

    def __init__(self, sdk, api_key: str, model: str, base_url: str | None):
        self.sdk, self.model = sdk, model
        self.client = sdk.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=REQUEST_TIMEOUT_S)

    def complete(self, prompt: str) -> Reply:
        # max_tokens rather than max_completion_tokens: local servers understand it.
        completion = self.client.chat.completions.create(model=self.model, max_tokens=MAX_ANSWER_TOKENS,
                                                         messages=[{"role": "user", "content": prompt}])
        choice = completion.choices[0]
        usage = completion.usage
        return Reply(choice.message.content or "", choice.finish_reason != "length",
                     usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)


CHATS = {"anthropic": ("anthropic", AnthropicChat), "openai": ("openai", OpenAIChat)}


def _import_sdk(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise NLAError(f"the {module} explainer needs the {module} SDK; install it with pip install 'nla[api]'") \
            from None


def resolve_api_key(backend: str, api_key_env: str | None, base_url: str | None) -> str:
    """The key from the environment (never stored); a placeholder for a keyless local server."""
    name = api_key_env or DEFAULT_KEY_ENVS[backend]
    if name.lower() == NO_KEY:
        if not base_url:
            raise NLAError("--api-key-env none is only for a local server; pass its --base-url too")
        return "no-key"  # the SDKs insist on some key; a keyless server ignores it
    key = os.environ.get(name, "").strip()
    if not key:
        raise NLAError(f"the {backend} explainer needs an API key in ${name}; export it, name another variable "
                       "with --api-key-env, or pass --api-key-env none for a local server")
    return key


class AnswerCache:
    """Append-only JSONL of finished answers; a line is flushed as soon as it is written."""

    def __init__(self, path: Path):
        self.path = path
        # a last line cut short by a kill is dropped (and the file mended) as every resumable log does
        self.answers: dict[str, dict] = {record["key"]: record for record in complete_records(path)}
        self._lock = threading.Lock()

    def add(self, key: str, reply: Reply) -> None:
        record = {"key": key, "answer": reply.text, "complete": reply.complete,
                  "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens}
        with self._lock:
            append_records(self.path, [record])
            self.answers[key] = record


class APIFailing(Exception):
    """A request that still failed after every retry."""


class ApiExplainer:
    """Explains requests through a chat API, concurrently, with retries and an answer cache."""

    def __init__(self, backend: str, *, model: str | None = None, base_url: str | None = None,
                 api_key_env: str | None = None, cache_path: Path, concurrency: int = DEFAULT_CONCURRENCY,
                 max_retries: int = DEFAULT_MAX_RETRIES, progress: bool = True,
                 sleep: Callable[[float], object] | None = None):
        if backend not in CHATS:
            raise NLAError(f"unknown API backend '{backend}'; choose one of: {', '.join(CHATS)}")
        module, chat = CHATS[backend]
        sdk = _import_sdk(module)
        self.name, self.model = backend, model or DEFAULT_MODELS[backend]
        self.chat = chat(sdk, resolve_api_key(backend, api_key_env, base_url), self.model, base_url)
        self.sdk = sdk
        self.cache = AnswerCache(cache_path)
        self.concurrency, self.max_retries, self.progress = concurrency, max_retries, progress
        self.usage: dict[str, int] = {}  # counts of the latest explain() call; stage.py reports them
        self._stopping = threading.Event()  # set when one request gave up: the others stop retrying
        # Backoff waits on the stop flag, so a give-up or Ctrl-C wakes workers that are waiting to retry.
        self.sleep = sleep or self._stopping.wait
        self._failure = ""  # why the first request gave up
        self._failure_lock = threading.Lock()

    def key(self, prompt: str) -> str:
        return hashlib.sha256(json.dumps([self.name, self.model, INSTRUCTION_VERSION, prompt]).encode()).hexdigest()

    def explain(self, requests: list[ExplainRequest]) -> list[str | None]:
        return [self._explanation(record) for record in self.answers([prompt_for(r) for r in requests])]

    def rewrite(self, texts: list[str], instruction: str) -> list[str | None]:
        """Each text rewritten as `instruction` asks (the prompt: the instruction, a blank line, the text); None
        where the answer was cut at the token cap. Cached and retried as explanations are."""
        records = self.answers([f"{instruction}\n\n{text}" for text in texts])
        return [r["answer"].strip() or None if r["complete"] else None for r in records]

    def answers(self, prompt_list: list[str]) -> list[dict]:
        """The cached answer record of each prompt, asking the API (concurrently) for those not cached yet."""
        keys = [self.key(p) for p in prompt_list]
        prompts = dict(zip(keys, prompt_list))  # identical prompts are asked once
        missing = [k for k in prompts if k not in self.cache.answers]
        usage = {"api_requests": 0, "cache_hits": len(prompts) - len(missing), "retries": 0,
                 "input_tokens": 0, "output_tokens": 0}
        self.usage = usage
        self._stopping.clear()
        self._failure = ""
        with ThreadPoolExecutor(self.concurrency) as pool, \
                tqdm(total=len(missing), desc=f"{self.name} answers", unit="req", disable=not self.progress) as bar:
            futures = [pool.submit(self._ask, k, prompts[k]) for k in missing]
            try:
                for future in as_completed(futures):
                    reply, retries = future.result()
                    usage["api_requests"] += 1
                    usage["retries"] += retries
                    usage["input_tokens"] += reply.input_tokens
                    usage["output_tokens"] += reply.output_tokens
                    bar.update()
            except APIFailing as err:
                pool.shutdown(wait=True, cancel_futures=True)  # requests in flight still land in the cache
                raise NLAError(f"the {self.name} API is failing ({self._failure or err}); answers so far are "
                               f"cached in {self.cache.path}, rerun the same command to resume") from None
            except BaseException:
                self._stopping.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return [self.cache.answers[k] for k in keys]

    @staticmethod
    def _explanation(record: dict) -> str | None:
        return clean_answer(record["answer"]) if record["complete"] else None

    def _ask(self, key: str, prompt: str) -> tuple[Reply, int]:
        """One request, retried on rate limits, server errors and lost connections; cached when it lands."""
        for attempt in range(self.max_retries + 1):
            if self._stopping.is_set():
                raise APIFailing("stopped: another request gave up")
            try:
                reply = self.chat.complete(prompt)
                self.cache.add(key, reply)
                return reply, attempt
            except self.sdk.APIError as err:
                status = getattr(err, "status_code", None)
                lost = isinstance(err, self.sdk.APIConnectionError)
                what = "connection error" if lost else f"HTTP {status}" if status else "unreadable response"
                if not (lost or status == 429 or (status or 0) >= 500):
                    self._give_up(f"{what}: {_one_line(err)}")  # a bad key, model or request: retrying won't help
                if attempt == self.max_retries:
                    self._give_up(f"{what} after {self.max_retries} retries")
                self.sleep(_retry_delay(err, attempt))
        raise AssertionError("unreachable")

    def _give_up(self, reason: str) -> NoReturn:
        # Flagged here, not in the main thread, so no worker starts another request meanwhile.
        with self._failure_lock:
            self._failure = self._failure or reason
        self._stopping.set()
        raise APIFailing(reason)


def _retry_delay(err: Exception, attempt: int) -> float:
    """The server's retry-after when it sends one, else exponential backoff with jitter."""
    response = getattr(err, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    try:
        if header is not None:
            return min(max(float(header), 0.0), BACKOFF_CAP_S)
    except ValueError:
        pass  # an HTTP date; back off instead
    backoff = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt)
    return backoff * random.uniform(0.5, 1.0)  # jitter so concurrent workers do not retry in step


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:200]
