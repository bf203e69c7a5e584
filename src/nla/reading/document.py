"""The trace document: what `nla trace` writes as trace.json, and `Trace`, its typed form in Python.

    trace = reader.trace("The capital of France is Paris.")     # a Trace
    trace.tokens[3].explanation, trace.tokens[3].score, trace.tokens[3].label, trace.tokens[3].claims
    trace.to_json(); trace.to_html(); trace.to_arrow(); trace.to_pandas(); trace.save("runs/trace")

trace.json (schema "nla.trace", version 1):

    schema, schema_version, created_at, seconds
    nla          {name, layer, d_model, base_checkpoint, stage}
    target       the target model's name
    input        {source, kind: text|chat, text (as the target saw it), messages, prompt_tokens, continued}
    settings     {max_new_tokens, batch_size, min_position, continue_tokens, max_tokens}
    calibration  {denominator (B), low, high, rows, scored_rows, source, estimated, claims, note, ...}
    tokens[]     {position, token_id, token, special, generated, traced, sink (position 0 or an attention sink:
                  left out of the mean), and for traced tokens:
                  status (ok|failed), failure (why, or null), explanation (null when failed), answer
                  (everything the AV wrote), explanation_tokens, norm, mse (2(1 - cos)), cosine,
                  score (1 - mse/B), label (High|Medium|Low|failed), next_tokens[] {token, prob} (the target's
                  5 likeliest), claims[] {text, start, end, weight, negligible, quotes[] {text, start, end,
                  where: context|later|absent, flagged, prediction, predicted (a prediction among next_tokens)}}}
    summary      {tokens, traced, failed, mean_score (sinks left out), labels {High, Medium, Low, failed}, claims}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from nla.atomic import write_json, write_text
from nla.errors import NLAError
from nla.reading.render import trace_page

SCHEMA, SCHEMA_VERSION = "nla.trace", 1
TRACE_JSON, TRACE_HTML, PARTIAL_LOG = "trace.json", "trace.html", ".partial/tokens.jsonl"


@dataclass(frozen=True)
class TracedToken:
    """One token of a trace. The reading's fields are None on tokens that were shown but not traced."""

    position: int
    token: str
    token_id: int
    traced: bool
    special: bool = False
    generated: bool = False  # written by the target after the input (--continue)
    sink: bool = False  # position 0 or an attention sink: left out of the mean
    status: str | None = None  # ok | failed
    explanation: str | None = None  # None: failed (no complete <explanation> tags)
    failure: str | None = None  # why it failed, in words
    score: float | None = None  # 1 - MSE/B
    label: str | None = None  # High | Medium | Low | failed
    mse: float | None = None  # 2(1 - cos) of the AR's reconstruction
    claims: tuple[dict, ...] = ()  # each {text, weight, negligible, quotes[...]}
    next_tokens: tuple[dict, ...] = ()  # the target's likeliest next tokens {token, prob}

    @classmethod
    def from_row(cls, row: dict) -> "TracedToken":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        for name in ("claims", "next_tokens"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


class Trace:
    """A trace document with typed access; `document` is exactly what trace.json holds."""

    def __init__(self, document: dict):
        self.document = document

    @property
    def tokens(self) -> list[TracedToken]:
        return [TracedToken.from_row(row) for row in self.document["tokens"]]

    @property
    def traced(self) -> list[TracedToken]:
        return [t for t in self.tokens if t.traced]

    @property
    def summary(self) -> dict:
        return self.document["summary"]

    def to_json(self) -> str:
        return json.dumps(self.document, indent=2, ensure_ascii=False)

    def to_html(self) -> str:
        return trace_page(self.document)

    def to_arrow(self):
        """One row per token: position, token, explanation, score, label, and the claims' counts."""
        import pyarrow as pa

        rows = [{"position": t.position, "token": t.token, "traced": t.traced, "sink": t.sink,
                 "explanation": t.explanation, "score": t.score, "label": t.label, "mse": t.mse,
                 "claims": len(t.claims), "flagged_quotes": sum(q["flagged"] for c in t.claims for q in c["quotes"])}
                for t in self.tokens]
        return pa.Table.from_pylist(rows)

    def to_pandas(self):
        """to_arrow() as a pandas DataFrame (pandas is not a dependency of nla: pip install pandas)."""
        try:
            import pandas  # noqa: F401
        except ImportError as err:
            raise NLAError("Trace.to_pandas needs pandas; pip install pandas (or use to_arrow())") from err
        return self.to_arrow().to_pandas()

    def save(self, out: str | Path) -> Path:
        """OUT/trace.json and OUT/trace.html, as nla trace writes them."""
        out = Path(out)
        write_trace(self.document, out)
        return out

    @classmethod
    def read(cls, path: str | Path) -> "Trace":
        return cls(read_trace(Path(path)))

    def __repr__(self) -> str:
        s = self.summary
        return f"Trace({s['traced']} of {s['tokens']} tokens traced, mean score {s['mean_score']})"


def check_output(out: Path, overwrite: bool, finished: str = TRACE_JSON, what: str = "a trace") -> None:
    """Refuse to replace a finished output (its `finished` file marks it) unless asked; checked before any model
    is loaded. nla trace's by default, nla steer's with steer.json."""
    if out.exists() and not out.is_dir():
        raise NLAError(f"{out} is a file; pass a folder to --out")
    if (out / finished).exists() and not overwrite:
        raise NLAError(f"{out} already holds {what}; pass --overwrite or another --out")


def write_trace(trace: dict, out: Path) -> None:
    """trace.html, then trace.json, whose presence marks a finished trace: replacing an older trace, a kill
    between the two leaves no trace.json (unfinished, and a rerun resumes), never a new page beside old data."""
    (out / TRACE_JSON).unlink(missing_ok=True)
    write_text(out / TRACE_HTML, trace_page(trace))
    write_json(out / TRACE_JSON, trace)


def read_trace(path: Path, max_bytes: int | None = None) -> dict:
    """A trace.json written by nla trace (any version up to this one), or a one-line error."""
    path = Path(path)
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise NLAError(f"{path.name} is larger than {max_bytes} bytes; open it with a browser from disk")
    try:
        trace = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NLAError(f"cannot read {path.name} as JSON ({err}); pass a trace.json written by nla trace") from err
    if not isinstance(trace, dict) or trace.get("schema") != SCHEMA:
        raise NLAError(f"{path.name} is not an nla trace (no \"schema\": \"{SCHEMA}\")")
    if not isinstance(trace.get("schema_version"), int) or trace["schema_version"] > SCHEMA_VERSION:
        raise NLAError(f"{path.name} has trace schema version {trace.get('schema_version')}; this nla reads up to "
                       f"{SCHEMA_VERSION}: upgrade nla")
    return trace
