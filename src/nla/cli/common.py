"""What every command group shares: the typer app, option defaults, help texts and the error wrapper."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import types
import typing

import click
import typer

from nla.autoencoder.decoding import TEMPERATURE
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


DEBUG_ENV = "NLA_DEBUG"
_debug = {"on": False}  # set by the --debug option on every invocation


@app.callback()
def options(debug: bool = typer.Option(False, "--debug", help="On an error, show the Python traceback instead of "
                                       f"one line (also: {DEBUG_ENV}=1).")):
    # Options that come before the command: nla --debug train-ar ...
    _debug["on"] = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def user_errors(command):
    """Print NLAError as one line (exit 2); say how to resume after Ctrl-C (exit 130). Anything else is one
    line too: an OSError that names its file (a path, permissions, a full disk: the user can fix it) exits 2;
    any other exception is a bug in nla, reported in one line with exit 1 and the way to see its traceback,
    because a screen of library frames helps no user, while --debug keeps it for whoever fixes the bug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _quiet_libraries()
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise  # typer's own ways out (typer.Exit is a RuntimeError: keep it away from the catch-all)
        except KeyboardInterrupt:
            typer.echo("\ninterrupted; finished chunks are kept, rerun the same command to resume", err=True)
            raise typer.Exit(130)
        except Exception as err:
            if _debug["on"]:
                raise
            typer.echo(f"error: {one_line(err)}", err=True)
            raise typer.Exit(2 if isinstance(err, NLAError) or _names_a_file(err) else 1)

    return wrapper


def _names_a_file(err: Exception) -> bool:
    return isinstance(err, OSError) and bool(err.filename) and bool(err.strerror)


def one_line(err: Exception) -> str:
    """The message `error:` prints: an NLAError's own line, a file's OS error, or a bug's type and first line."""
    from nla.inputs import first_line

    if isinstance(err, NLAError):
        return " ".join(str(err).splitlines())  # one line, even where a message quotes a file's lines
    if _names_a_file(err):
        return f"{err.filename}: {err.strerror}; check the path and its permissions"
    return (f"internal error ({type(err).__name__}: {first_line(err)}); rerun with --debug for the traceback "
            "and report it")


# ---------------------------------------------------------------- options every model-loading command shares

DEVICE_HELP = "auto (the GPU, else the CPU), cpu, cuda, cuda:N."
READ_DEVICE_HELP = ("Where the target, AV and AR go: auto (the GPU; spread over all GPUs when there are several; "
                    "else the CPU), cpu, cuda, cuda:N.")
DTYPE_HELP = "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16."
NLA_HELP = ("The NLA (default: the one shipped in nla): an nla folder (av/ + ar/, or their LoRA adapters), or a "
            "hub prefix such as kitft/nla-qwen2.5-7b-L20 (its -av and -ar repositories). Or pass --nla-av and "
            "--nla-ar.")


def opt_device(default: str = "auto", help: str = DEVICE_HELP):
    return typer.Option(default, "--device", help=help)


def opt_dtype():
    return typer.Option("auto", "--dtype", help=DTYPE_HELP)


def opt_nla():
    return typer.Option(None, "--nla", help=NLA_HELP)


def opt_nla_av():
    return typer.Option(None, "--nla-av", help="The AV alone: a released AV folder or hub id (with --nla-ar).")


def opt_nla_ar():
    return typer.Option(None, "--nla-ar", help="The AR alone: a released AR folder or hub id (with --nla-av).")


def opt_max_new_tokens(default: int):
    return typer.Option(default, "--max-new-tokens", help="Longest explanation, in tokens (the release: 200); "
                        "one that reaches it without its closing tag is reported as truncated.")


def opt_temperature():
    return typer.Option(TEMPERATURE, "--temperature", help="0: greedy (the release's examples); above 0: sampled.")


# ---------------------------------------------------------------- options generated from a stage's config


def _option_type(hint):
    """The type typer parses an option as: a union with None becomes Optional of its first type (str before
    Path, as `str | Path | None` takes hub ids too); a tuple, one comma-separated str."""
    if typing.get_origin(hint) is tuple:  # tuple[str, ...]: one comma-separated option (the config splits it)
        return str
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return typing.Optional[str if str in rest else rest[0]]
    return hint


def options_from(config_cls, *, skip: tuple[str, ...] = (), convert: dict | None = None):
    """A command whose options are the config dataclass's fields (name, type, default and help from the field's
    `setting`), besides the command's own parameters; the command gets the config as its first argument, `cfg`.
    `convert` maps a field to a function applied to its value first (e.g. checked_dtype)."""
    convert = convert or {}

    def decorate(command):
        hints = typing.get_type_hints(config_cls)
        own = [p for name, p in inspect.signature(command).parameters.items() if name != "cfg"]
        taken = {p.name for p in own}  # a field the command declares itself (another default) is still the config's
        fields = [f for f in dataclasses.fields(config_cls) if f.name not in skip]
        params = own + [inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=_option_type(hints[f.name]),
            default=typer.Option(... if f.default is dataclasses.MISSING else
                                 ",".join(f.default) if isinstance(f.default, tuple) else f.default,
                                 help=f.metadata.get("help") or None)) for f in fields if f.name not in taken]
        names = {f.name for f in fields}

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {k: convert.get(k, lambda v: v)(v) for k, v in kwargs.items() if k in names}
            return command(config_cls(**values), **{k: v for k, v in kwargs.items() if k not in names})

        wrapper.__signature__ = inspect.Signature(params)
        return wrapper

    return decorate


def checked_dtype(dtype: str) -> str:
    from nla.models.loading import check_dtype_name

    return check_dtype_name(dtype)


def load_nla(nla, nla_av, nla_ar, *, device: str, dtype: str, **kwargs):
    """NLA.load from the --nla / --nla-av / --nla-ar options (one definition for every command)."""
    from nla.autoencoder.nla import NLA

    return NLA.load(nla, av=nla_av, ar=nla_ar, device=device, dtype=checked_dtype(dtype), **kwargs)
