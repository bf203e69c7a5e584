"""Steering from edited explanations against two controls, on the built-in set (issue 21).

    python benchmarks/steering.py [--nla default] [--alpha 0.5,1,2,4] [--all-positions] [--json OUT.json]

Each case of nla/reading/steer_edits.yaml (word swaps, predictions, topic and sentiment changes) is read
at its last token, its explanation edited, and the target steered by the edit's vector, a random
direction of the same norm and another case's edit vector of the same norm (reading/steer_effect.py).
Prints per α: success (a TO word written, no FROM word), the mean rise of log P(TO word) over the
unsteered continuation, and the median perplexity of the steered continuation, for each of the three;
then three cases' continuations beside their controls.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nla.reading.steer import SteerSettings
from nla.reading.steer_effect import ARMS, load_cases, steering_effect
from nla.reading.trace import Reader


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nla", default="default")
    parser.add_argument("--cases", type=Path, help="a steering set of your own (default: the built-in one)")
    parser.add_argument("--alpha", default="0.5,1,2,4")
    parser.add_argument("--all-positions", action="store_true")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = SteerSettings(alphas=tuple(float(a) for a in args.alpha.split(",")), all_positions=args.all_positions,
                             max_new_tokens=args.max_new_tokens)
    started = time.time()
    reader = Reader.load(args.nla)
    report = steering_effect(reader, load_cases(args.cases), settings,
                             progress=lambda line: print(line, file=sys.stderr, flush=True))
    report["seconds"] = round(time.time() - started, 1)
    report["settings"] = {"nla": args.nla, "alphas": settings.alphas, "all_positions": settings.all_positions,
                          "max_new_tokens": settings.max_new_tokens}
    print(f"{report['edited']} of {report['cases']} cases edited ({len(report['skipped'])} explanations held no "
          f"FROM); unsteered continuations already succeed in {fmt(report['unsteered_success'], '.0%')}")
    print("alpha | " + " | ".join(f"{arm}: success, logP rise, ppl" for arm in ARMS) + " | edit beats random, unrelated")
    for row in report["table"]:
        print(f"{row['alpha']:g} | " + " | ".join(
            f"{fmt(row[a]['success'], '.0%')}, {fmt(row[a]['logprob_rise'], '+.3f')}, {fmt(row[a]['perplexity'], '.1f')}"
            for a in ARMS) + f" | {fmt(row['edit_beats']['random'], '.0%')}, {fmt(row['edit_beats']['unrelated'], '.0%')}")
    strongest = len(settings.alphas) - 1
    for result in sorted(report["results"], key=lambda r: -r["arms"]["edit"][strongest]["logprob_rise"])[:3]:
        print(f"\n{result['text']!r}\n  edited: {result['edited']}\n  unsteered: {result['baseline']!r}")
        for arm in ARMS:
            print(f"  {arm} (alpha {settings.alphas[strongest]:g}): {result['arms'][arm][strongest]['text']!r}")
    print(f"\n{report['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
