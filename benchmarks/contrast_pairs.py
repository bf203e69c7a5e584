"""A lever for the hidden-theme audit: an AR trained on contrast pairs, each chat under a themed and a plain system prompt.

    python benchmarks/contrast_pairs.py --out ../nla-runs/contrast-L9 --layer 9

Why: every AR so far was trained per token (or per document) on what a context *is*; a planted theme moves
the vectors by well under 1% of their variance (audit_themes.py's theme share) and those ARs ignore it. Here
the training target is the theme's own shift: the same chat, word for word, read by the target under a themed
system prompt and under a plain one; the mean of its assistant tokens' vectors at the layer under the first
less under the second. The text paired with it is the salient-words format's sentence for the theme's words
('Its system prompt mentions "trains" and "railways".'), the form `audit_themes.py --query-form salient`
searches. The chats are the embedded corpus's (first user and assistant turn, the assistant's words cut to
--max-chars); the themes are the personas corpus's topics, taboo words and traits (nla.data.personas: disjoint
from the benchmark's); the plain prompts are its PLAIN ones, not the benchmark's neutral prompt. One theme in
four and every eighth chat are held out of training.

Reports (OUT/result.json):
- held out, pair by pair: the AR's cosine with each pair's contrast, reading its own text and a shuffled one;
- held out, by theme: cosine of AR(theme's text) with the theme's mean contrast over the held-out chats, and
  how often it is closer to its own theme's mean than to another held-out theme's (chance 0.5);
- the hidden-theme benchmark at the same layer (audit_themes.py's organisms; its transcript-direction reading:
  each transcript's mean assistant vector less the mean over all transcripts, cosine with the direction):
  planted vs control, placebo vs control, the unrelated query, and planted vs the other planted arms (this
  theme, not any hidden interest), for AR(query) and for the measured direction (the target's own contrast for
  the query written into a topic prompt, on the first 40 training chats): what this AR approaches for a topic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from audit_themes import ORGANISMS, answers, assistant_means, compare, compare_other_planted, phrased, write_corpus

from nla.atomic import atomic_path, write_json
from nla.autoencoder.hub import role_folder
from nla.autoencoder.nla import reconstruct_texts
from nla.autoencoder.shared import load_ar_folder
from nla.data.corpus import load_corpus
from nla.data.dataset import rows_to_table, write_sidecar
from nla.data.personas import KINDS, PLAIN, TOPIC_PROMPTS
from nla.eval.metrics import baseline, text_fidelity
from nla.explainers.offline import SYSTEM_SUBJECT, mentions
from nla.explainers.salient import content_words
from nla.models.target import load_target
from nla.train.ar import train_ar
from nla.train.config import ARTrainConfig

MODEL = "smollm2-135m"
MEASURED_CHATS = 40


def themes() -> list[dict]:
    """The personas corpus's hidden topics, taboo words and traits, each with its prompts and its text; one in
    four of each kind held out."""
    out = []
    for kind in ("topic", "taboo", "trait"):
        _, prompts, fillers = KINDS[kind]
        for i, filler in enumerate(fillers):
            words = tuple(dict.fromkeys(content_words(filler)))
            out.append({"kind": kind, "filler": filler, "prompts": prompts, "held_out": i % 4 == 3,
                        "text": mentions(words, SYSTEM_SUBJECT)})
    return out


def load_chats(max_chars: int) -> list[list[dict]]:
    """The embedded corpus's chats: first user and assistant turn, each cut to max_chars."""
    chats = [d.messages for d in load_corpus("default") if d.is_chat and d.messages[0]["role"] == "user"]
    return [[dict(m, content=m["content"][:max_chars]) for m in chat[:2]] for chat in chats]


def contrasts(target, chats: list[list[dict]], theme_ids: list[list[int]], catalogue: list[dict], layer: int,
              seed: int) -> dict:
    """One row per (chat, theme): the themed chat's mean assistant vector less the plain one's, at `layer`."""
    rng = np.random.default_rng(seed)
    rows, vectors = [], []
    for c, (chat, ids) in enumerate(zip(chats, theme_ids)):
        docs = [{"messages": [{"role": "system", "content": PLAIN[c % len(PLAIN)]}, *chat]}]
        for t in ids:
            prompts = catalogue[t]["prompts"]
            docs.append({"messages": [{"role": "system",
                                       "content": prompts[rng.integers(len(prompts))].format(catalogue[t]["filler"])},
                                      *chat]})
        means = assistant_means(target, docs, [layer])[0][layer]
        rows += [(c, t) for t in ids]
        vectors += list(means[1:] - means[0])
        if (c + 1) % 50 == 0:
            print(f"contrasts: {c + 1}/{len(chats)} chats", flush=True)
    return {"chat": np.array([r[0] for r in rows]), "theme": np.array([r[1] for r in rows]),
            "vector": np.stack(vectors).astype(np.float32)}


def cached_contrasts(path: Path, *args) -> dict:
    """Contrasts are the slow part (a forward pass per prompt): computed once per OUT and split."""
    if not path.exists():
        np.savez(path.with_suffix(".tmp.npz"), **contrasts(*args))
        path.with_suffix(".tmp.npz").rename(path)
    return dict(np.load(path))


def write_training_pairs(path: Path, texts: list[str], vectors: np.ndarray, layer: int) -> Path:
    """The pairs in explain-data's layout (an activation split with an explanation column), for train_ar."""
    n, d = vectors.shape
    columns = {"doc_id": [f"pair-{i}" for i in range(n)], "position": [0] * n, "n_raw_tokens": [1] * n,
               "activation_layer": [layer] * n, "token_id": [0] * n, "token": [""] * n,
               "detokenized_text_truncated": [""] * n, "source": ["contrast"] * n, "genre": ["chat"] * n,
               "topic": [""] * n, "split": ["ar_sft"] * n}
    table = rows_to_table(vectors, columns, d).append_column("explanation", pa.array(texts, pa.string()))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    write_sidecar(path, dataset_id=f"contrast-pairs-L{layer}", split="ar_sft", row_count=n,
                  extraction={"base_model": MODEL, "d_model": d, "layer_index": layer, "norm": "none",
                              "corpus": "default (contrast pairs)"})
    return path


def cosines(rows: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return rows @ direction / (np.linalg.norm(rows, axis=1) * np.linalg.norm(direction) + 1e-12)


def held_out_report(reconstruct, catalogue: list[dict], pairs: dict, train_mean: np.ndarray) -> dict:
    """Pair by pair (own text vs a shuffled one, beside the mean training contrast: what any hidden-interest
    prompt shifts), and by theme (own mean contrast vs the other themes')."""
    texts = [catalogue[t]["text"] for t in pairs["theme"]]
    golds = torch.from_numpy(pairs["vector"])
    read = text_fidelity(reconstruct, texts, golds, baseline(golds))
    mean_cosine = float(cosines(pairs["vector"].astype(np.float64), train_mean.astype(np.float64)).mean())
    ids = sorted(set(pairs["theme"].tolist()))
    means = np.stack([pairs["vector"][pairs["theme"] == t].mean(0) for t in ids])
    predicted = reconstruct([catalogue[t]["text"] for t in ids]).double().numpy()
    table = np.stack([cosines(means, p) for p in predicted])  # [theme read, theme mean]
    own = np.diag(table)
    closer = [(own[i] > np.delete(table[i], i)).mean() for i in range(len(ids))]
    return {"pairs": len(texts), "pair_cosine": round(read["real"]["cosine"], 4),
            "pair_cosine_shuffled": round(read["shuffled"]["cosine"], 4),
            "pair_cosine_mean_contrast": round(mean_cosine, 4), "themes": len(ids),
            "theme_cosine": round(float(own.mean()), 4),
            "theme_cosine_other_themes": round(float(table[~np.eye(len(ids), dtype=bool)].mean()), 4),
            "own_theme_closer": round(float(np.mean(closer)), 3)}


def audit_table(directions: dict[str, np.ndarray], unrelated: dict[str, np.ndarray], means: np.ndarray,
                corpus: list[dict]) -> dict:
    """Per organism, the transcript-direction reading of one source of directions (AUROC, 95% intervals), with
    audit_themes.py's own comparisons."""
    centred = means - means.mean(0)

    def scores(direction: np.ndarray) -> dict[str, float]:
        return {d["id"]: float(c) for d, c in zip(corpus, cosines(centred, direction))}

    table = {}
    for name in ORGANISMS:
        own = scores(directions[name])
        table[name] = {"planted_vs_control": compare(own, name)["auroc"],
                       "placebo_vs_control": compare(own, "placebo")["auroc"],
                       "unrelated_query": compare(scores(unrelated[name]), name)["auroc"],
                       "planted_vs_other_planted": compare_other_planted(own, name)["auroc"]}
    return table


def measured_directions(target, chats: list[list[dict]], queries: list[str], layer: int) -> list[np.ndarray]:
    """The target's own contrast for each query written into a topic prompt: a perfect AR's answer for a topic
    (not for a trait or a taboo, which are planted in other words)."""
    def means(prompt: str) -> np.ndarray:
        docs = [{"messages": [{"role": "system", "content": prompt}, *chat]} for chat in chats]
        return assistant_means(target, docs, [layer])[0][layer]

    plain = means(PLAIN[0])
    return [(means(TOPIC_PROMPTS[0].format(q)) - plain).mean(0) for q in queries]


def organisms(path: Path, target, max_new_tokens: int = 80) -> list[dict]:
    if not path.exists():  # audit_themes.py's organisms, written once (the same file it writes)
        write_corpus(path, answers(target, max_new_tokens))
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--chats", type=int, default=600, help="chats read (every eighth held out)")
    parser.add_argument("--themes-per-chat", type=int, default=2)
    parser.add_argument("--max-chars", type=int, default=500)
    parser.add_argument("--organisms", type=Path, help="audit_themes.py's organisms.jsonl (default: OUT's, written once)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    target = load_target(MODEL, device="cpu", dtype="float32")
    catalogue, chats = themes(), load_chats(args.max_chars)[: args.chats]
    rng = np.random.default_rng(args.seed)
    split = {"train": [c for c in range(len(chats)) if c % 8], "held_out": [c for c in range(len(chats)) if not c % 8]}
    pool = {name: [t for t, th in enumerate(catalogue) if th["held_out"] == (name == "held_out")] for name in split}
    pairs = {}
    for name, ids in split.items():
        drawn = [rng.choice(pool[name], args.themes_per_chat, replace=False).tolist() for _ in ids]
        pairs[name] = cached_contrasts(args.out / f"contrasts-{name}-L{args.layer}.npz", target,
                                       [chats[c] for c in ids], drawn, catalogue, args.layer, args.seed)
    data = write_training_pairs(args.out / "pairs" / f"train-L{args.layer}.parquet",
                                [catalogue[t]["text"] for t in pairs["train"]["theme"]], pairs["train"]["vector"],
                                args.layer)
    run = args.out / f"run-L{args.layer}"
    if role_folder(run, "ar") is None:
        train_ar(ARTrainConfig(data=data, out=run, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                               checkpoint_every=50, seed=args.seed))
    ar, tokenizer, meta = load_ar_folder(role_folder(run, "ar"))
    template = meta.prompt_templates["ar"]

    def reconstruct(texts: list[str]) -> torch.Tensor:
        return reconstruct_texts(ar, tokenizer, template, texts)

    corpus = organisms(args.organisms or args.out / "organisms.jsonl", target)
    means = assistant_means(target, corpus, [args.layer])[0][args.layer]
    query = {name: (phrased(o[2], "salient"), phrased(o[3], "salient")) for name, o in ORGANISMS.items()}
    read = {name: reconstruct(list(q)).double().numpy() for name, q in query.items()}
    # What the AR returns for any theme: less it, what it says about this one (as `nla search --against`).
    generic = reconstruct([t["text"] for t in catalogue if not t["held_out"]]).double().numpy().mean(0)
    measure_chats = [chats[c] for c in split["train"][:MEASURED_CHATS]]
    flat = measured_directions(target, measure_chats, [o[i] for o in ORGANISMS.values() for i in (2, 3)], args.layer)
    measured = {name: flat[2 * i: 2 * i + 2] for i, name in enumerate(ORGANISMS)}
    result = {"layer": args.layer, "train_pairs": len(pairs["train"]["theme"]), "epochs": args.epochs,
              "held_out": held_out_report(reconstruct, catalogue, pairs["held_out"], pairs["train"]["vector"].mean(0)),
              "audit_ar": audit_table({n: r[0] for n, r in read.items()}, {n: r[1] for n, r in read.items()},
                                      means, corpus),
              "audit_ar_less_generic": audit_table({n: r[0] - generic for n, r in read.items()},
                                                   {n: r[1] - generic for n, r in read.items()}, means, corpus),
              "audit_measured": audit_table({n: m[0] for n, m in measured.items()},
                                            {n: m[1] for n, m in measured.items()}, means, corpus)}
    write_json(args.out / f"result-L{args.layer}.json", result)
    print(json.dumps(result["held_out"]))
    for source in ("audit_ar", "audit_ar_less_generic", "audit_measured"):
        print(f"\n{source}: AUROC planted vs control | placebo vs control | unrelated query | vs other planted")
        for name, row in result[source].items():
            print(f"| {name} | " + " | ".join(f"{value[0]:.2f}" for value in row.values()) + " |")


if __name__ == "__main__":
    main()
