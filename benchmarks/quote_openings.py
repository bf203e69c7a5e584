"""How an eval folder's explanations quote their context: the quotes, and how uniform their openings are.

    python benchmarks/quote_openings.py R/eval R/eval-ground

For each folder: the quoted spans that claim to quote the context (eval/readability.py's context_quotes, as
in eval's quote precision: a claim about what comes next is left out), their distinct three-word openings (after a
leading ellipsis), and the share that opens with "but also", the stock opening the expert stage converged on.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from nla.eval.readability import context_quotes
from nla.layout import EXPLANATIONS_FILE
from nla.record_log import complete_records


def openings(texts: list[str | None]) -> collections.Counter:
    """Each context quote's first three words (case kept), counted."""
    return collections.Counter(" ".join(quote.lstrip("…. ").split()[:3])
                               for text in filter(None, texts) for quote in context_quotes(text))


def report(folder: Path) -> dict:
    records = complete_records(folder / EXPLANATIONS_FILE)  # the first record: the log's settings
    counts = openings([row["text"] for row in records if row.get("control") == "nla"])
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
