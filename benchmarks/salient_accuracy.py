"""How often a verbalizer names a context's salient words right, on rows it never trained on (issue 22).

    python benchmarks/salient_accuracy.py --run RUN [--json OUT.json]

RUN is an `nla train` run whose explain stage wrote the salient-words format (`explain.salient_words`);
its refit stage had the SFT AV explain every ar_sft activation greedily (RUN/refit/av_texts.jsonl),
documents the AV never trained on. For each answer, against the row's true text and context:

- precision: the share of the words the AV named (`It mentions "..."`) that occur in the context
  (grounded: what the claim checker counts), and of those, the share that are the row's true ones;
- recall: the share of the row's true salient words the AV named;
- system prompt: on chats with a system prompt of their own, the share of answers naming any of its
  true words (`Its system prompt mentions "..."`), and of a shuffled pairing (another chat's words:
  the control, what naming a frequent theme at random gives).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

SYSTEM = re.compile(r'Its system prompt mentions (.*?)\.(?: |$)')
MENTIONS = re.compile(r'(?<!prompt )\bIt mentions (.*?)\.(?: |$)')
QUOTED = re.compile(r'"([^"]+)"')


def named(text: str | None, pattern: re.Pattern) -> list[str]:
    match = pattern.search(text or "")
    return [w.lower() for w in QUOTED.findall(match.group(1))] if match else []


def av_texts(run: Path) -> dict[int, str | None]:
    lines = (run / "refit" / "av_texts.jsonl").read_text(encoding="utf-8").splitlines()[1:]  # first: settings
    records = [json.loads(line) for line in lines]
    return {r["row"]: r["text"] for r in records if r.get("control", "nla") == "nla"}


def measure(rows: list[dict], answers: dict[int, str | None], seed: int = 0) -> dict:
    grounded, right, recalled, true_counts = [], [], [], []
    system_hits, system_control, chats = [], [], []
    for i, row in enumerate(rows):
        if i not in answers:
            continue
        context = row["detokenized_text_truncated"].lower()
        truth, got = set(named(row["explanation"], MENTIONS)), named(answers[i], MENTIONS)
        grounded += [w in context for w in got]
        right += [w in truth for w in got if w in context]
        recalled += [w in got for w in truth]
        true_counts.append(len(truth))
        true_system = set(named(row["explanation"], SYSTEM))
        if true_system:
            chats.append((true_system, set(named(answers[i], SYSTEM))))
    order = np.random.default_rng(seed).permutation(len(chats))
    for (truth, got), (other, _) in zip(chats, [chats[j] for j in order]):
        system_hits.append(bool(truth & got))
        system_control.append(bool(other & got) and other != truth)
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    return {"answers": len(answers), "named_words": len(grounded), "grounded_share": mean(grounded),
            "true_share_of_grounded": mean(right), "recall_of_true_words": mean(recalled),
            "true_words_per_row": mean(true_counts), "chats_with_own_system_prompt": len(chats),
            "system_prompt_word_named": mean(system_hits), "shuffled_control": mean(system_control)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = pq.read_table(args.run / "acts" / "explanations" / "ar_sft.parquet",
                         columns=["explanation", "detokenized_text_truncated"]).to_pylist()
    result = measure(rows, av_texts(args.run))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
