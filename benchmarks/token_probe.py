"""How much of the recent context a layer-K activation holds in readable form: a linear probe.

    python benchmarks/token_probe.py --acts runs/acts --back 6

For each offset i = 0..back-1 it fits a ridge regression from the (standardised) activation
to the input embedding of token t-i on the training splits (ar_sft, av_sft, rl), then decodes
each validation activation as the vocabulary token whose embedding is nearest (cosine) to
the prediction. The top-1 accuracy per offset says how far back an exact quote is written in
the vector at all: a verbalizer can hardly quote what a linear read-out cannot find (a
non-linear one may find a little more). The chance rate of the most common token is printed
beside it. No model training: a few seconds of linear algebra after one tokenizer pass.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from nla.inputs import vectors_of
from nla.models.target import load_target

TRAIN_SPLITS = ("ar_sft", "av_sft", "rl")


def recent_tokens(tokenizer, table, back: int) -> list[list[int] | None]:
    """The last `back` token ids of each row's context; None where re-tokenising the text does not end on the
    row's own token (about 1% of rows: a token that merges differently out of context)."""
    texts = table.column("detokenized_text_truncated").to_pylist()
    found = []
    for token_id, text in zip(table.column("token_id").to_pylist(), texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        found.append(ids[-back:] if ids and ids[-1] == token_id else None)
    return found


def probe(acts: Path, back: int, ridge: float) -> list[dict]:
    target = load_target(json.loads((acts / "summary.json").read_text())["model"], device="cpu", dtype="float32")
    embeddings = target.model.get_input_embeddings().weight.detach().float().numpy()
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    train = [pq.read_table(acts / f"{s}.parquet") for s in TRAIN_SPLITS if (acts / f"{s}.parquet").exists()]
    heldout = pq.read_table(acts / "validation.parquet")
    x_train = np.concatenate([vectors_of(t) for t in train]).astype(np.float64)
    tokens_train = [ids for t in train for ids in recent_tokens(target.tokenizer, t, back)]
    x_val, tokens_val = vectors_of(heldout).astype(np.float64), recent_tokens(target.tokenizer, heldout, back)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    z_train, z_val = (x_train - mean) / std, (x_val - mean) / std
    results = []
    for offset in range(back):
        rows = [i for i, ids in enumerate(tokens_train) if ids is not None and len(ids) > offset]
        held = [i for i, ids in enumerate(tokens_val) if ids is not None and len(ids) > offset]
        answers_train = [tokens_train[i][-1 - offset] for i in rows]
        z = z_train[rows]
        weights = np.linalg.solve(z.T @ z + ridge * len(rows) * np.eye(z.shape[1]), z.T @ embeddings[answers_train])
        predicted = z_val[held] @ weights
        predicted /= np.linalg.norm(predicted, axis=1, keepdims=True)
        decoded = (predicted @ unit.T).argmax(axis=1)
        truth = np.array([tokens_val[i][-1 - offset] for i in held])
        common = Counter(answers_train).most_common(1)[0][0]
        results.append({"offset": offset, "top1": float(np.mean(decoded == truth)),
                        "most_common_token_rate": float(np.mean(truth == common)), "train_rows": len(rows),
                        "heldout_rows": len(held)})
        print(json.dumps(results[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acts", type=Path, required=True, help="A finished nla extract folder.")
    parser.add_argument("--back", type=int, default=6, help="How many recent tokens to probe for (t, t-1, ...).")
    parser.add_argument("--ridge", type=float, default=1.0, help="Ridge strength per training row.")
    args = parser.parse_args()
    probe(args.acts, args.back, args.ridge)


if __name__ == "__main__":
    main()
