"""What stands between a request and the model in `nla serve`: a body-size limit, a Host check (DNS
rebinding), security headers on every response, and the one worker thread that runs the model, with a
bounded queue."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from fastapi import HTTPException
from fastapi.responses import JSONResponse

log = logging.getLogger("nla.serve")


class BodyLimit:
    """Refuse a body over max_bytes: by its Content-Length at once, else as soon as the stream passes it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            response = JSONResponse({"error": f"the request body is over {self.max_bytes} bytes"}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # reaches the handlers as a 413
                raise HTTPException(413, f"the request body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)


class SecurityHeaders:
    """No framing, no sniffing, no referrer; pages may load only this server's own scripts and styles."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
               (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store"),
               (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                                            b"connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


class HostCheck:
    """Answer only requests addressed to an allowed host name: a web page elsewhere cannot reach a
    loopback server through a domain it re-points at 127.0.0.1 (DNS rebinding)."""

    def __init__(self, app, allowed: tuple[str, ...]):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").rsplit(":", 1)[0]
            if host not in self.allowed:
                response = JSONResponse({"error": f"unexpected Host {host!r}; open the page at "
                                                  f"http://{self.allowed[0]}:PORT/"}, status_code=400)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class ModelWorker:
    """Runs model work one job at a time on its own thread; refuses new work when too many wait."""

    def __init__(self, max_queue: int):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nla-model")
        self.max_queue = max_queue
        self.pending = 0  # accepted, not finished; touched only on the event loop's thread

    async def run(self, fn, *args):
        if self.pending >= self.max_queue:
            raise HTTPException(503, f"busy: {self.pending} requests are waiting; retry shortly",
                                headers={"Retry-After": "5"})
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.pending -= 1
