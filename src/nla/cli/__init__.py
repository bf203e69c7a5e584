"""The `nla` command line: a thin layer over the stage functions, one module per command group.

    nla demo                      # the main job on the embedded default
    nla info --model gemma3-270m  # layers, d_model, activation norms
    nla extract --out runs/acts   # corpus -> activation dataset
    nla explain-data --dataset runs/acts   # warm-start explanations for the SFT splits
    nla train-ar / train-av / rl / export / plot  # training (cli/train.py)
    nla explain "some text" --nla runs/nla # every token's explanation and fidelity (cli/read.py)
    nla eval --nla runs/nla --out runs/eval  # held-out FVE next to its controls, JSON + PNGs
    nla trace "some text" --nla runs/nla --out runs/trace  # per-token scores and claim checks, JSON + HTML
    nla steer "text" --edit "a=>b" --out runs/steer  # steer the target with an edited explanation
    nla serve --nla runs/nla       # the local web viewer and JSON API (the `serve` extra)
    nla build-corpus --out FILE   # regenerate the embedded default corpus
    nla index --corpus F --out runs/audit   # store many transcripts' activations (and readings)
    nla search runs/audit "the ocean" --docs  # rank positions or documents by a query

Groups: cli/data.py (info, extract, explain-data, build-corpus), cli/train.py (train-ar,
train-av, rl, export, plot), cli/read.py (explain, eval, demo), cli/reading.py (trace,
steer, calibrate, serve), cli/audit.py (index, search). Each registers its commands on the one `app` defined in cli/common.py.
"""

from nla.cli import audit, data, read, reading, train  # noqa: F401  (registers the commands)
from nla.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
