"""Helpers for the reading tests (trace, claims, viewer): a tiny NLA whose AV follows a script.

A random tiny AV never closes its <explanation> tag, which tests the failure path but nothing
else. `script_verbalizer` replaces an NLA's explain() with a deterministic stand-in that
writes multi-claim explanations with a grounded quote and an invented one, and fails (cut at
the cap) on every fourth token, so claims, quotes and failures all show up in a few seconds.
The AR, the target and everything downstream stay real.
"""

from __future__ import annotations

import threading
import time
import types
from contextlib import contextmanager
from pathlib import Path

import torch

from nla.autoencoder.nla import NLA
from nla.autoencoder.verbalizer import Explanation, check_vectors

TEXT = "Rivers carry water from the mountains to the sea, shaping valleys along their banks."
SCRIPT = [
    'The text describes rivers and water. It quotes "carry water" from the sentence; '
    'it mentions "purple elephants". The next word may be "the".',
    "A sentence about geography and nature. The current token continues a noun phrase.",
    'Writing about the sea. It quotes "shaping valleys".',
]
FAILED_ANSWER = "<explanation>The text is about a river that keeps going and going"


def scripted_explain(self: NLA, vectors: torch.Tensor, *, max_new_tokens: int = 150, **_) -> list[Explanation]:
    """Stands in for NLA.explain: the same activation always gets the same explanation."""
    vectors = check_vectors(vectors, self.d_model)
    out = []
    for v in vectors:
        pick = int(v.abs().argmax()) % 4
        if pick == 3:
            out.append(Explanation(None, FAILED_ANSWER, max_new_tokens))
        else:
            out.append(Explanation(SCRIPT[pick], f"<explanation>{SCRIPT[pick]}</explanation>", 30))
    return out


def script_verbalizer(nla: NLA) -> NLA:
    nla.explain = types.MethodType(scripted_explain, nla)
    return nla


def scripted_reader(nla_path: Path, model: Path):
    """A Reader on the tiny NLA with the scripted AV (its built-in calibration made with the same AV)."""
    from nla.reading.calibration import calibration_for
    from nla.reading.trace import Reader

    nla = script_verbalizer(NLA.load(nla_path))
    target = nla.target(str(model))
    return Reader(nla, target, calibration_for(nla, nla_path, target), "tiny-nla")


@contextmanager
def serving(app):
    """Run an ASGI app under uvicorn on a free 127.0.0.1 port in a thread; yield its base URL."""
    import uvicorn

    from conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
