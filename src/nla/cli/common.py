"""What every command group shares: the typer app, option defaults, help texts and the error wrapper."""

from __future__ import annotations

import functools
import logging
import os

import typer

from nla.data.config import ExtractConfig, defaults
from nla.data.sampling import SplitFractions
from nla.errors import NLAError
from nla.eval.config import EvalConfig
from nla.rl.config import RLConfig
from nla.train.config import ARTrainConfig, AVTrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Natural Language Autoencoders: read a model's activations as text.")

MODEL_HELP = "Preset (smollm2-135m, gemma3-270m), local HF folder, .gguf file, or hub id."
CORPUS_HELP = "'default' (embedded), a .txt/.jsonl/.parquet file, or hf:NAME[:CONFIG][@SPLIT]."
# Option defaults come from the config dataclasses, so they are stated once.
EXTRACT = defaults(ExtractConfig)
SPLIT = defaults(SplitFractions)
AR = defaults(ARTrainConfig)
AV = defaults(AVTrainConfig)
EVAL = defaults(EvalConfig)
RL = defaults(RLConfig)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # per-model weight bars; nla shows its own progress
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def user_errors(command):
    """Print NLAError as one line (exit 2); say how to resume after Ctrl-C (exit 130)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _quiet_libraries()
        try:
            return command(*args, **kwargs)
        except NLAError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("\ninterrupted; finished chunks are kept, rerun the same command to resume", err=True)
            raise typer.Exit(130)

    return wrapper

