"""`nla serve`: the local web viewer and its JSON API (the `serve` extra: FastAPI and uvicorn).

Nothing outside this package imports it, so `import nla` and every other command work without
the extra; `nla serve` imports nla.viewer.app only when it runs.
"""
