"""A bounded load test: 50 concurrent API requests to a live server on a tiny model, 0 errors.

benchmarks/serve_load.py runs the same load against `nla serve` in its own process and reports
latency percentiles and the server's peak memory.
"""

import asyncio
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from conftest import build_tiny_nla, load_benchmark  # noqa: E402
from nla.viewer.app import create_app  # noqa: E402
from reading_helpers import scripted_reader, serving  # noqa: E402


@pytest.mark.slow  # a live server
def test_fifty_concurrent_requests_all_succeed(tmp_path, tiny_llama, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    bench = load_benchmark("serve_load")
    reader = scripted_reader(build_tiny_nla(tmp_path / "nla", tiny_llama), tiny_llama)
    with serving(create_app(reader, tmp_path)) as url:
        started = time.perf_counter()
        results = asyncio.run(bench.fire(f"{url}/api/explain", bench.request_bodies(50, "explain"), timeout=120))
        report = bench.figures(results, time.perf_counter() - started)
        after = httpx.get(f"{url}/api/health", timeout=30).status_code
    print(report)
    assert report["requests"] == 50 and report["errors"] == 0, results
    assert report["wall_s"] < 120 and after == 200  # the burst is served in time and the server stays up
