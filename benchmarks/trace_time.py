"""Wall time of `nla trace` on a 200-token chat transcript.

    python benchmarks/trace_time.py --nla runs/nla              # its target must be smollm2-135m or another chat model
    python benchmarks/trace_time.py --nla runs/nla --tokens 400 --batch-size 32

The transcript is the first chat of the embedded default corpus that renders to at least
--tokens tokens with the target's chat template, its last message cut to exactly that many.
Reports the time to load the NLA (and its calibration: the built-in estimate on first use, if
the NLA has no calibration.json), the trace's wall time for every token (explanations, scores,
leave-one-out claim weights), tokens/s, and how many explanations failed (a failure runs to the
AV's cap, so a weak AV is slower).
"""

from __future__ import annotations

import argparse
import json
import time

from nla.data.corpus import load_corpus
from nla.reading.config import TraceSettings
from nla.reading.prompt import Prompt
from nla.reading.trace import Reader


def transcript(reader: Reader, tokens: int) -> list[dict]:
    """A corpus chat whose rendering holds exactly `tokens` tokens (its last message shortened word by word)."""
    def length(messages):
        return len(reader.target.encode(reader.target.render_chat(messages), rendered_chat=True))

    for doc in load_corpus("default"):
        if doc.is_chat and length(list(doc.messages)) >= tokens:
            messages = [dict(m) for m in doc.messages]
            while length(messages) > tokens:
                messages[-1]["content"] = messages[-1]["content"].rsplit(" ", 1)[0]
            return messages
    raise SystemExit(f"no chat of the default corpus reaches {tokens} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nla", required=True)
    parser.add_argument("--model", help="Its target, if not the NLA's own.")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=TraceSettings.batch_size)
    parser.add_argument("--max-new-tokens", type=int, default=TraceSettings.max_new_tokens)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    started = time.perf_counter()
    reader = Reader.load(args.nla, model=args.model, device=args.device, max_new_tokens=args.max_new_tokens)
    loaded = time.perf_counter() - started
    messages = transcript(reader, args.tokens)
    started = time.perf_counter()
    trace = reader.trace(Prompt(messages=messages, source=f"{args.tokens}-token chat"),
                         TraceSettings(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens), progress=True)
    seconds = time.perf_counter() - started
    summary = trace.summary
    print(json.dumps({"tokens": summary["traced"], "trace_seconds": round(seconds, 1),
                      "tokens_per_second": round(summary["traced"] / seconds, 2), "load_seconds": round(loaded, 1),
                      "failed": summary["failed"], "labels": summary["labels"], "claims": summary["claims"],
                      "calibration": trace.document["calibration"]["note"], "device": str(reader.target.device),
                      "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}, indent=2))


if __name__ == "__main__":
    main()
