"""Held-out fidelity of a trained AR, next to its controls.

    python benchmarks/ar_fidelity.py --ar runs/ar-smol/ar_adapter --data runs/acts/explanations-offline/validation.parquet

Reports FVE (REFERENCE.md's definition: mean of the sqrt(d)-normalised activations over
this held-out set, not renormalised) for:
  real        each activation's own explanation
  shuffled    explanations permuted across rows (the control: a text that is not about
              this activation should explain nothing)
  mean        predicting the held-out mean direction (a little below 0: the prediction is
              normalised to sqrt(d) like every other, the mean itself is shorter)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.parquet as pq
import torch

from nla.autoencoder.nla import reconstruct_texts
from nla.autoencoder.shared import load_ar_folder
from nla.eval.metrics import baseline, fidelity, text_fidelity
from nla.inputs import vectors_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ar", type=Path, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ar, tokenizer, meta = load_ar_folder(args.ar)  # ar/ or ar_adapter/
    ar.eval()
    table = pq.read_table(args.data)
    texts = table.column("explanation").to_pylist()
    golds = torch.from_numpy(vectors_of(table).copy())
    reference = baseline(golds)
    read = text_fidelity(lambda t: reconstruct_texts(ar, tokenizer, meta.prompt_templates["ar"], t), texts, golds,
                         reference, args.seed)
    results = {
        **read,
        "mean": fidelity(reference.mean.expand_as(golds), golds, reference),
    }
    print(f"{len(texts)} held-out rows, layer {meta.extraction_layer_index}, FVE denominator B = "
          f"{reference.denominator:.3f}")
    for name, r in results.items():
        print(f"  {name:>8}: FVE {r['fve']:+.3f}   MSE {r['mse']:.3f}   cos {r['cosine']:.3f}")


if __name__ == "__main__":
    main()
