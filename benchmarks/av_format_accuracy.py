"""How well a trained verbalizer writes the explanation format, part by part, on rows it never trained on.

    python benchmarks/av_format_accuracy.py --explained RUN/acts/explanations/ar_sft.parquet RUN_A RUN_B

The refit stage of `nla train` has each run's SFT AV explain every ar_sft activation greedily
(RUN/refit/av_texts.jsonl); the AV trained on av_sft, so these are held-out documents. Each
answer is split into the format's three sentences and compared with the row's true text:
the genre-and-topic sentence, the three next tokens (all, and the first), the quote (exact,
its last three words) and whether the quote ends on the row's own token. Runs are compared
on the rows all of them have explained.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pyarrow.parquet as pq

FORMAT = re.compile(r'(?P<setting>.*?\.) Next it expects (?P<next>.*?)\. The text so far ends: "…?(?P<quote>.*)"$',
                    re.S)
FIRST_TOKEN = re.compile(r'^"(.*?)"(?:,| or|$)')
PARTS = ("tagged", "setting", "next_all", "next_first", "quote_exact", "quote_last3_words", "quote_ends_on_token")


def sentences(text: str) -> dict | None:
    match = FORMAT.match(text)
    return match.groupdict() if match else None


def first_token(next_sentence: str) -> str | None:
    match = FIRST_TOKEN.match(next_sentence)
    return match.group(1) if match else None


def score(true_text: str, token: str, answer: str | None) -> dict[str, bool]:
    """Which parts of one answer match the true text (an untagged answer matches nothing)."""
    right = dict.fromkeys(PARTS, False)
    if answer is None:
        return right
    right["tagged"] = True
    true, got = sentences(true_text), sentences(answer)
    if got is None or true is None:
        return right
    right["setting"] = got["setting"] == true["setting"]
    right["next_all"] = got["next"] == true["next"]
    right["next_first"] = first_token(got["next"]) is not None and first_token(got["next"]) == first_token(true["next"])
    right["quote_exact"] = got["quote"] == true["quote"]
    right["quote_last3_words"] = got["quote"].split()[-3:] == true["quote"].split()[-3:]
    right["quote_ends_on_token"] = bool(token.strip()) and got["quote"].endswith(token)
    return right


def av_texts(run: Path) -> dict[int, str | None]:
    lines = (run / "refit" / "av_texts.jsonl").read_text(encoding="utf-8").splitlines()[1:]  # first: settings
    records = [json.loads(line) for line in lines]
    return {r["row"]: r["text"] for r in records if r.get("control", "nla") == "nla"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explained", type=Path, required=True, help="The true texts: explanations/ar_sft.parquet")
    parser.add_argument("runs", type=Path, nargs="+", help="nla train run folders whose refit stage has run")
    args = parser.parse_args()
    truth = pq.read_table(args.explained, columns=["explanation", "token"]).to_pylist()
    answers = {run: av_texts(run) for run in args.runs}
    rows = [i for i in range(len(truth)) if all(i in texts for texts in answers.values())]
    for run, texts in answers.items():
        scores = [score(truth[i]["explanation"], truth[i]["token"], texts[i]) for i in rows]
        shares = {part: round(sum(s[part] for s in scores) / len(rows), 4) for part in PARTS}
        print(json.dumps({"run": str(run), "rows": len(rows), **shares}))


if __name__ == "__main__":
    main()
