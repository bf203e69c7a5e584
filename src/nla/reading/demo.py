"""`nla demo`: the shipped NLA reads a few built-in texts and a short chat, token by token.

    nla demo                      # prints every token's explanation and score; writes runs/demo/index.html

Each text is traced with the same `Reader` as `nla trace` (so the figures match), printed
one token per line, and written as OUT/<name>/trace.html; OUT/index.html links them and
says what the score means. Everything is local: the pages need no network to open.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from nla.atomic import write_text
from nla.autoencoder.shipped import default_dir, is_default
from nla.data.config import ExtractConfig
from nla.data.dataset import read_dataset
from nla.data.extract import SUMMARY, extract
from nla.data.info import format_summary
from nla.inputs import vectors_of
from nla.layout import CONTEXT_COLUMN, EVAL_JSON
from nla.reading.config import TraceSettings
from nla.reading.prompt import Prompt
from nla.reading.trace import Reader

TEXTS = {
    "rivers": Prompt(text="Rivers carry water from the mountains to the sea, shaping valleys and feeding the farms "
                          "along their banks.", source="built-in"),
    "python": Prompt(text="In Python, a list comprehension builds a new list by applying an expression to every item "
                          "of an iterable.", source="built-in"),
    "letter": Prompt(text="Dear Anna, thank you for the lovely flowers you sent for my birthday. They", source="built-in"),
    "chat": Prompt(messages=[{"role": "user", "content": "What is a good name for a small grey cat?"},
                             {"role": "assistant", "content": "How about Pebble? It is short, cute and grey."}],
                   source="built-in"),
}
EXPLAINED_TOKENS = 10  # per text: the last ones (earlier tokens are shown, not explained) keep the demo short

MEANING = ("Score = 1 - MSE/B: how much of the activation's variance the reconstructor recovers from the "
           "explanation alone (1 perfect, 0 no better than the average activation, below 0 worse). High / "
           "Medium / Low split the NLA's held-out scores in thirds. A high score says the explanation carries "
           "the activation's information, not that every claim in it is true: quotes are checked against the "
           "text, and explanations can still be wrong.")


def token_line(token: dict) -> str:
    if not token.get("traced"):
        return f"  {token['token']!r:>14}  (not explained)"
    score = "failed" if token["score"] is None else f"{token['label']:<6} {token['score']:+.2f}"
    text = token["explanation"] if token["explanation"] is not None else f"[failed] {token['answer']}"
    flagged = sum(q["flagged"] for c in token.get("claims") or [] for q in c["quotes"])
    warning = f"  [{flagged} quote(s) not in the text]" if flagged else ""
    return f"  {token['token']!r:>14}  {score}  {' '.join(text.split())}{warning}"


def index_page(results: dict[str, dict], calibration_note: str) -> str:
    rows = "".join(
        f"<li><a href='{name}/trace.html'>{html.escape(name)}</a>: {r['summary']['traced']} tokens explained, "
        f"mean score {r['summary']['mean_score'] or 0:+.2f}</li>" for name, r in results.items())
    return (f"<!doctype html><meta charset='utf-8'><title>nla demo</title>"
            f"<body style='font-family:sans-serif;max-width:46em;margin:2em auto'>"
            f"<h1>nla demo</h1><p>{html.escape(MEANING)}</p><p><i>{html.escape(calibration_note)}</i></p>"
            f"<ul>{rows}</ul></body>")


def held_out_report(nla) -> list[str]:
    """The shipped NLA's held-out figures, when its evaluation report is there (ours always is)."""
    import json

    report = default_dir() / "eval" / EVAL_JSON
    if not is_default(nla) or not report.exists():
        return []
    result = json.loads(report.read_text())
    shuffled = result["controls"]["shuffled_av"]["fve"]
    lines = [f"held-out FVE {result['fve']:+.2f} on {result['rows']} validation activations "
             f"(shuffled-AV control {shuffled:+.2f})"]
    buckets = result.get("by_position", {}).get("buckets", [])
    if buckets:
        lines.append("by token position: " + ", ".join(f"{b['bucket']}: {b['nla']:+.2f}" for b in buckets)
                     + " (positions before 16 were not trained on: expect them to decode worse)")
    return lines


def run_demo(out: Path, *, nla="default", echo=print, device: str = "auto") -> dict:
    started = time.perf_counter()
    reader = Reader.load(nla, device=device)
    echo(f"loaded {reader.name} (layer {reader.nla.layer}) in {time.perf_counter() - started:.0f} s")
    echo(MEANING)
    for line in held_out_report(nla):
        echo(line)
    results = {}
    for name, prompt in TEXTS.items():
        ids, _ = reader.encode(prompt, TraceSettings())
        settings = TraceSettings(min_position=max(0, len(ids) - EXPLAINED_TOKENS))
        trace = reader.trace(prompt, settings)
        results[name] = trace.document
        echo(f"\n{name} ({trace.document['input']['kind']}):")
        for token in trace.document["tokens"]:
            echo(token_line(token))
        trace.save(out / name)
    write_text(out / "index.html", index_page(results, reader.calibration.note))
    echo(f"\ncalibration: {reader.calibration.note}")
    echo(f"wrote {out}/index.html ({len(results)} traces) in {time.perf_counter() - started:.0f} s")
    return results


def extraction_demo(out: Path, *, echo=print, max_docs: int = 240) -> dict:
    """Where the install lacks the shipped NLA, the demo shows the first stage instead: the default target's
    layer-20 activations of the embedded corpus, with their statistics and a few held-out contexts."""
    import json
    import textwrap

    if (out / SUMMARY).exists():
        echo(f"reusing the finished extraction in {out}/ (delete it to run again)")
        summary = json.loads((out / SUMMARY).read_text())
    else:
        summary = extract(ExtractConfig(out=out, max_docs=max_docs))
    echo(format_summary(summary, out))
    table = read_dataset(out / "validation.parquet")
    norms = (vectors_of(table) ** 2).sum(axis=1) ** 0.5
    echo("\nA few held-out activations (context ... [token] -> norm):")
    for i in range(0, table.num_rows, max(1, table.num_rows // 5))[:5]:
        row = {k: table.column(k)[i].as_py() for k in (CONTEXT_COLUMN, "token", "genre", "source")}
        context = row[CONTEXT_COLUMN].removesuffix(row["token"]).replace("\n", " ")
        snippet = textwrap.shorten(context[-90:], 90, placeholder="...")
        echo(f"  [{row['source']}/{row['genre']}] ...{snippet}[{row['token']}] -> {norms[i]:.1f}")
    echo("\nNext: nla train --preset smollm2-135m --out runs/smol trains an NLA on these (see README).")
    return summary
