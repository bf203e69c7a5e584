"""How an eval folder's explanations quote their context: the quotes, and how uniform their openings are.

    python benchmarks/quote_openings.py R/eval R/eval-ground

For each folder: the quoted spans that claim to quote the context (eval/claim_text.py's finder; a claim about
what comes next is left out, as in eval's quote precision), their distinct three-word openings (after a
leading ellipsis), and the share that opens with "but also", the stock opening the expert stage converged on.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from nla.eval.claim_text import looks_ahead, quote_spans, split_claims


def openings(texts: list[str | None]) -> collections.Counter:
    """Each context quote's first three words (case kept), counted."""
    counts = collections.Counter()
    for text in filter(None, texts):
        spans = quote_spans(text)
        for claim in split_claims(text):
            if not looks_ahead(claim.text):
                counts.update(" ".join(text[s:e].lstrip("…. ").split()[:3]) for s, e in spans
                              if claim.start <= s < claim.end)
    return counts


def report(folder: Path) -> dict:
    lines = (folder / "explanations.jsonl").read_text().splitlines()[1:]  # the first line: settings
    counts = openings([row["text"] for row in map(json.loads, lines) if row["control"] == "nla"])
    total = sum(counts.values())
    but_also = sum(c for o, c in counts.items() if o.lower().lstrip(", ").startswith("but also"))
    return {"quotes": total, "distinct_openings": len(counts), "but_also": but_also / total if total else 0.0,
            "top": counts.most_common(3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("evals", nargs="+", type=Path, help="nla eval output folders")
    for folder in parser.parse_args().evals:
        r = report(folder)
        print(f"{folder}: {r['quotes']} quotes of the context, {r['distinct_openings']} distinct openings, "
              f"{r['but_also']:.1%} open with 'but also'; most common {r['top']}")


if __name__ == "__main__":
    main()
