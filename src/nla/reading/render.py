"""The self-contained trace page: trace.html opens in a browser straight from disk, with no network.

The page is the template in reading/page/ with the viewer's CSS and JS and the trace itself
inlined; its Content-Security-Policy forbids every request, so nothing can load from a CDN.
`nla serve` serves the same viewer.js and viewer.css.
"""

from __future__ import annotations

import html
import json
import re
from importlib.resources import files

_SLOT = re.compile(r"\{\{(\w+)\}\}")


def page_asset(name: str) -> str:
    return files("nla.reading").joinpath("page", name).read_text(encoding="utf-8")


def script_json(data: dict) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' can close the element or open a comment."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def trace_page(trace: dict) -> str:
    title = f"nla trace: {trace['input']['source']} ({trace['nla']['name']}, layer {trace['nla']['layer']})"
    slots = {"title": html.escape(title), "css": page_asset("viewer.css"), "js": page_asset("viewer.js"),
             "trace": script_json(trace)}
    # One pass: text put into a slot is never scanned for slots again.
    return _SLOT.sub(lambda m: slots[m.group(1)], page_asset("trace.html"))
