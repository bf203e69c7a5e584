"""The web app behind `nla serve`: a page to trace prompts and chats, and the JSON API it uses.

    GET  /                  the viewer: type a prompt or paste a chat, read every token; open saved traces
    GET  /api/health        the NLA, its calibration, the queue and the limits
    POST /api/trace         {text | messages, continue_tokens, min_position} -> a trace (nla.reading.trace schema)
    POST /api/explain       {text | messages, positions} -> readings of a few tokens (default: the last one)
    POST /api/steer         {text | messages, position, explanation | edit, alphas} -> continuations before and
                            after steering with the edited explanation (reading/steer.py)
    GET  /api/traces        saved trace.json files under the folder the server was started with
    GET  /api/traces/{path} one of them
    GET  /api/docs          the API described from /api/openapi.json (served here: no CDN)
    GET  /search, POST /api/search, POST /api/search/reading   an audit index (nla serve --index; viewer/search.py)

Every request passes the same checks, cheapest first and all before any model work: the body
size (BodyLimit, before the body is parsed), the shape of the fields (pydantic), the text length
(checked_prompt), then the token count (Reader.encode, after tokenizing). Model work then runs
one request at a time on one thread, since the NLA switches adapters on one shared model; at
most `max_queue` requests wait, later ones get 503 with Retry-After. Every error is a JSON
{"error": ...} with a 4xx status (5xx only for a bug), and the server keeps serving.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import nla
from nla.errors import NLAError
from nla.reading.document import TRACE_JSON, read_trace
from nla.reading.index_store import Index
from nla.reading.prompt import Prompt
from nla.reading.render import page_asset
from nla.reading.steer import Edit, SteerSettings, steer
from nla.reading.trace import Reader, TraceSettings, display_name
from nla.viewer.middleware import BodyLimit, HostCheck, ModelWorker, SecurityHeaders
from nla.viewer.search import add_search_routes

log = logging.getLogger("nla.serve")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 64 * 1024  # larger bodies are refused before they are read in full
    max_chars: int = 16_000  # text, or all message contents together
    max_tokens: int = 512  # tokens read per request, the continuation included
    max_continue: int = 128  # tokens the target may write per request
    max_positions: int = 16  # tokens one explain request may ask about (as Neuronpedia's API)
    max_queue: int = 64  # requests waiting for the model; more get 503
    max_trace_file_bytes: int = 32 * 1024 * 1024  # saved traces larger than this are not served
    max_listed_traces: int = 200


# ---------------------------------------------------------------- requests


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(min_length=1, max_length=32)
    content: str


class TraceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="A prompt or any text; give this or messages.")
    messages: list[Message] | None = Field(None, description="A chat, rendered with the target's chat template.")
    template_system_prompt: bool = Field(False, description="A chat without a system message: trace the default "
                                         "system prompt the target's template adds (default: leave it out).")
    continue_tokens: int = Field(0, ge=0, description="Tokens the target writes after the input (traced too).")
    min_position: int = Field(0, ge=0, description="Earlier tokens are shown but not traced.")


class ExplainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="A prompt or any text; give this or messages.")
    messages: list[Message] | None = Field(None, description="A chat, rendered with the target's chat template.")
    template_system_prompt: bool = Field(False, description="A chat without a system message: trace the default "
                                         "system prompt the target's template adds (default: leave it out).")
    positions: list[int] | None = Field(None, description="Token positions (negative: from the end); default [-1].")


class SteerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="The text the target continues; give this or messages.")
    messages: list[Message] | None = Field(None, description="A chat; the assistant's turn is opened after it.")
    template_system_prompt: bool = Field(False, description="As in /api/trace.")
    position: int = Field(-1, description="The token whose explanation is edited (negative: from the end).")
    explanation: str | None = Field(None, max_length=4000, description="The edited explanation, whole.")
    edit: str | None = Field(None, max_length=400, description="Or FROM=>TO, applied to the AV's explanation.")
    alphas: list[float] = Field([2.0], min_length=1, max_length=4, description="Steering strengths.")
    all_positions: bool = Field(False, description="Add the vector at every later position too.")
    max_new_tokens: int = Field(24, ge=1, description="Tokens written per continuation.")


def checked_prompt(body: TraceBody | ExplainBody | SteerBody, limits: ServeLimits) -> Prompt:
    """The request's text or chat as a Prompt, within the character limit; NLAError (400) otherwise."""
    chars = len(body.text or "") + sum(len(m.content) for m in body.messages or [])
    if chars > limits.max_chars:
        raise NLAError(f"the input has {chars} characters; at most {limits.max_chars} are read per request")
    messages = [m.model_dump() for m in body.messages] if body.messages is not None else None
    return Prompt(text=body.text, messages=messages, source="chat" if messages is not None else "prompt",
                  template_system_prompt=body.template_system_prompt)


# ---------------------------------------------------------------- saved traces


def saved_traces(root: Path, limit: int, depth: int = 3) -> list[str]:
    """trace.json files under root (hidden folders skipped, links not followed), as relative paths."""
    found = []
    for folder, subfolders, names in os.walk(root):
        level = len(Path(folder).relative_to(root).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if level < depth else []
        if TRACE_JSON in names:
            found.append((Path(folder) / TRACE_JSON).relative_to(root).as_posix())
        if len(found) >= limit:
            break
    return sorted(found)


def saved_trace_path(root: Path, name: str) -> Path:
    """The file `name` names under root; 404 for anything else (outside root, a link out of it, not JSON),
    without saying whether such a file exists."""
    missing = HTTPException(404, "no saved trace by that name in the traces folder")
    if not name or "\x00" in name or Path(name).is_absolute():
        raise missing
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path.suffix != ".json" or not path.is_file():
        raise missing
    return path


# ---------------------------------------------------------------- the app


def static_asset(name: str) -> str:
    return files("nla.viewer").joinpath("static", name).read_text(encoding="utf-8")


STATIC = {"viewer.js": (page_asset, "text/javascript"), "viewer.css": (page_asset, "text/css"),
          "app.js": (static_asset, "text/javascript"), "api.js": (static_asset, "text/javascript"),
          "search.js": (static_asset, "text/javascript")}


def add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON {"error": one line}: bad input 400, a malformed body 422 (naming the field), HTTP
    errors their own status, and a bug 500 with its details in the server log only."""
    @app.exception_handler(NLAError)
    async def bad_input(request: Request, err: NLAError):
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_shape(request: Request, err: RequestValidationError):
        detail = [{"field": "body" if e["type"] == "json_invalid" else ".".join(str(x) for x in e["loc"][1:]),
                   "problem": e["msg"]} for e in err.errors()]
        first = detail[0] if detail else {"field": "body", "problem": "invalid"}
        return JSONResponse({"error": f"{first['field'] or 'body'}: {first['problem']}", "detail": detail},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception):
        log.exception("request to %s failed (%s)", request.url.path, type(err).__name__)
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)


def add_page_routes(app: FastAPI) -> None:
    """The viewer's page, the API's page and their static files."""
    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(static_asset("app.html"))

    @app.get("/api/docs", include_in_schema=False)
    async def api_page():
        return HTMLResponse(static_asset("api.html"))

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str):
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        read, media = STATIC[name]
        return Response(read(name), media_type=media)


def add_steer_route(app: FastAPI, reader: Reader, worker: ModelWorker, limits: ServeLimits) -> None:
    @app.post("/api/steer", summary="Steer the target with an edited explanation: continuations before and after")
    async def steer_route(body: SteerBody):
        if body.max_new_tokens > limits.max_continue:
            raise NLAError(f"max_new_tokens is {body.max_new_tokens}; at most {limits.max_continue} per request")
        steer_settings = SteerSettings(alphas=tuple(body.alphas), position=body.position,
                                       all_positions=body.all_positions, max_new_tokens=body.max_new_tokens)
        edit = Edit.parse(body.edit) if body.edit is not None else None
        prompt = checked_prompt(body, limits)
        return await worker.run(lambda: steer(reader, prompt, steer_settings, edit=edit, explanation=body.explanation))


def create_app(reader: Reader, traces: Path, *, limits: ServeLimits = ServeLimits(),
               settings: TraceSettings = TraceSettings(), allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS,
               index: Index | None = None) -> FastAPI:
    """The app for one loaded Reader. `traces`: the only folder saved traces are opened from.
    `allowed_hosts` refuses requests for other Host names (DNS rebinding); None allows any. `index`: an audit
    index (nla index) the search page and /api/search rank, made with the same NLA."""
    app = FastAPI(title="nla", version=nla.__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="Read a model's activations as text, with per-token fidelity and per-claim checks.")
    worker = ModelWorker(limits.max_queue)
    root = Path(traces).resolve()
    settings = replace(settings, max_tokens=limits.max_tokens)

    add_error_handlers(app)

    add_page_routes(app)

    @app.get("/api/health", summary="The NLA being served, its calibration, the queue and the limits")
    async def health():
        return {"status": "ok", "version": nla.__version__, "nla": reader.describe(),
                "target": display_name(reader.target.name), "calibration": reader.calibration.to_dict(),
                "queue": {"pending": worker.pending, "max": limits.max_queue}, "limits": asdict(limits)}

    @app.post("/api/trace", summary="Trace every token of a text or chat: explanation, score, label, claims")
    async def trace(body: TraceBody):
        if body.continue_tokens > limits.max_continue:
            raise NLAError(f"continue_tokens is {body.continue_tokens}; at most {limits.max_continue} per request")
        prompt = checked_prompt(body, limits)
        return await worker.run(lambda *args: reader.trace(*args).document, prompt,
                                replace(settings, continue_tokens=body.continue_tokens, min_position=body.min_position))

    @app.post("/api/explain", summary="Read a few tokens of a text (mse, cosine, norm, score, label, claims)")
    async def explain(body: ExplainBody):
        if body.positions is not None and not 1 <= len(body.positions) <= limits.max_positions:
            raise NLAError(f"ask for 1 to {limits.max_positions} positions per request, not {len(body.positions)}")
        return await worker.run(reader.explain, checked_prompt(body, limits), body.positions, settings)

    add_steer_route(app, reader, worker, limits)

    @app.get("/api/traces", summary="Saved trace.json files under the server's traces folder")
    async def list_traces():
        return {"folder": root.name, "traces": saved_traces(root, limits.max_listed_traces)}

    @app.get("/api/traces/{name:path}", summary="One saved trace, by its path under the traces folder")
    async def open_trace(name: str):
        return read_trace(saved_trace_path(root, name), max_bytes=limits.max_trace_file_bytes)

    add_search_routes(app, reader, index, worker, settings, static_asset)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=tuple(allowed_hosts))
    app.add_middleware(SecurityHeaders)
    return app
