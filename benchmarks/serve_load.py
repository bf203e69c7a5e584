"""Load test of `nla serve`: many concurrent API requests; errors, latency percentiles, peak memory.

    python benchmarks/serve_load.py                          # a tiny random NLA built here (seconds)
    python benchmarks/serve_load.py --nla runs/nla --requests 50 --endpoint trace

The server runs as `nla serve` in its own process on 127.0.0.1 (no traffic goes anywhere
else); all requests are sent at once, each with a different sentence. The server runs model
work one request at a time (the NLA shares one model between its roles), so latency grows
with the queue: p50 is about half the total, p99 about all of it. Reports errors (any
non-200 or lost connection), p50/p95/p99 latency, the wall time and the server's peak
resident memory (VmHWM, read from /proc while it still runs). Without --nla the NLA is a
tiny random one (tests/ builders): its AV never closes its tag, so every explanation runs to
--max-new-tokens, the worst case for time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

SENTENCES = [
    "Rivers carry water from the mountains to the sea.",
    "The museum opened a new exhibition of impressionist paintings.",
    "Python functions are defined with the def keyword.",
    "A list comprehension builds a new list from an iterable.",
    "The farmer watched the storm roll over the hills.",
]


async def fire(url: str, bodies: list[dict], timeout: float = 600.0) -> list[tuple[int | str, float]]:
    """POST every body at once; (status or error, seconds) per request."""
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=len(bodies))) as client:
        async def one(body):
            started = time.perf_counter()
            try:
                response = await client.post(url, json=body)
                return response.status_code, time.perf_counter() - started
            except httpx.HTTPError as err:
                return type(err).__name__, time.perf_counter() - started

        return await asyncio.gather(*(one(body) for body in bodies))


def request_bodies(count: int, endpoint: str) -> list[dict]:
    texts = [f"{SENTENCES[i % len(SENTENCES)]} ({i})" for i in range(count)]
    if endpoint == "explain":
        return [{"text": t, "positions": [-1]} for t in texts]
    return [{"text": t} for t in texts]


def figures(results: list[tuple[int | str, float]], wall: float) -> dict:
    latencies = np.array([seconds for _, seconds in results])
    return {"requests": len(results), "errors": sum(status != 200 for status, _ in results),
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
            "p99_s": float(np.percentile(latencies, 99)), "wall_s": wall}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tiny_nla(root: Path) -> tuple[Path, Path]:
    """A tiny random model and an NLA on it, from the test suite's builders."""
    tests = Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))
    from conftest import build_tiny_model, build_tiny_nla

    model = build_tiny_model(root / "model", "llama")
    return build_tiny_nla(root / "nla", model), model


def wait_until_up(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"nla serve exited with {server.returncode}: {server.stderr.read()}")
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"nla serve did not answer within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nla", type=Path, help="An NLA folder; default: a tiny random one built here.")
    parser.add_argument("--model", help="Its target, if not the NLA's own.")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--endpoint", choices=("explain", "trace"), default="explain")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="The AV's cap on the server.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        nla, model = (args.nla, args.model) if args.nla else tiny_nla(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "nla.cli", "serve", "--nla", str(nla), "--port", str(port), "--traces", tmp,
                   "--max-new-tokens", str(args.max_new_tokens), "--max-queue", str(max(64, args.requests))]
        command += ["--model", str(model)] if model else []
        env = {**os.environ, "NLA_CACHE_DIR": os.environ.get("NLA_CACHE_DIR", str(Path(tmp) / "cache"))}
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(url, server, seconds=600)
            started = time.perf_counter()
            results = asyncio.run(fire(f"{url}/api/{args.endpoint}", request_bodies(args.requests, args.endpoint)))
            result = {**figures(results, time.perf_counter() - started), "endpoint": args.endpoint,
                      "server_peak_rss_mb": peak_rss_mb(server.pid), "max_new_tokens": args.max_new_tokens,
                      "nla": "tiny random (d_model 32)" if not args.nla else str(args.nla)}
        finally:
            server.terminate()
            server.wait(30)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['requests']} concurrent /api/{args.endpoint} requests ({result['nla']}): "
              f"{result['errors']} errors; latency p50 {result['p50_s']:.2f} s, p95 {result['p95_s']:.2f} s, "
              f"p99 {result['p99_s']:.2f} s; all done in {result['wall_s']:.1f} s; "
              f"server peak memory {result['server_peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
