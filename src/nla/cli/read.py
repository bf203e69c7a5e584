"""Reading commands: explain, eval, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.cli.common import (
    EXTRACT,
    MODEL_HELP,
    READ_DEVICE_HELP,
    app,
    checked_dtype,
    load_nla,
    opt_device,
    opt_dtype,
    opt_max_new_tokens,
    opt_nla,
    opt_nla_ar,
    opt_nla_av,
    opt_temperature,
    options_from,
    user_errors,
)
from nla.errors import NLAError
from nla.eval.config import EvalConfig
from nla.inputs import check_out_folder
from nla.reading.config import EXPLAIN_MAX_TOKENS


@app.command("eval")
@user_errors
@options_from(EvalConfig, convert={"dtype": checked_dtype})
def eval_(
    cfg: EvalConfig,
    out: Path = typer.Option(Path("runs/eval"), help="Output folder: eval.json, rows.parquet, fve_by_*.png."),
    as_json: bool = typer.Option(False, "--json", help="Print the report (eval.json, top-level fve) to stdout."),
):
    """Held-out FVE of an NLA (default: the shipped one) next to its controls (shuffled AV, text-oracle AR,
    predict-the-mean)."""
    check_out_folder(cfg.out)
    from nla.eval.evaluate import evaluate, format_result

    result = evaluate(cfg)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(format_result(result))
    typer.echo(f"written to {cfg.out}/eval.json and {cfg.out}/rows.parquet")


@app.command("explain")
@user_errors
def explain(
    text: str = typer.Argument(..., help="The text whose tokens to explain."),
    nla: Optional[str] = opt_nla(),
    nla_av: Optional[str] = opt_nla_av(),
    nla_ar: Optional[str] = opt_nla_ar(),
    model: Optional[str] = typer.Option(None, help="The target; default: the AV's base_checkpoint. " + MODEL_HELP),
    min_position: int = typer.Option(0, help="Skip earlier tokens."),
    positions: Optional[str] = typer.Option(None, help="Only these token positions, comma-separated (negative: from "
                                            "the end; -1 is the last), as /api/explain's positions."),
    max_tokens: int = typer.Option(EXPLAIN_MAX_TOKENS, help="Refuse a longer text (each token is one explanation "
                                   "to write; nla trace reads long texts resumably)."),
    max_new_tokens: int = opt_max_new_tokens(MAX_NEW_TOKENS),
    temperature: float = opt_temperature(),
    device: str = opt_device(EXTRACT["device"], READ_DEVICE_HELP),
    dtype: str = opt_dtype(),
):
    """Print, for every token of TEXT, the NLA's explanation of the target's activation and its fidelity."""
    if min_position < 0:  # before minutes of model loading
        raise NLAError(f"--min-position {min_position} is negative; pass 0 (the first token) or more")
    if max_new_tokens < 1:
        raise NLAError(f"--max-new-tokens {max_new_tokens} leaves no room for an explanation; pass 1 or more")
    if max_tokens < 1:
        raise NLAError(f"--max-tokens {max_tokens} lets no token be read; pass 1 or more")
    wanted = parse_positions(positions)
    from nla.autoencoder.shipped import resolve as resolve_shipped
    from nla.reading.calibration import CALIBRATION_FILE, read_calibration
    from nla.reading.transcript import explain_text, format_readings

    # The NLA's own calibration when it has one (the shipped NLA does; estimating one is nla trace's job),
    # read before minutes of model loading.
    calibration = None if nla_av or nla_ar else read_calibration(resolve_shipped(nla) / CALIBRATION_FILE)
    # With LoRA adapters one base model serves target, AV and AR; a released NLA loads as AV + AR + target.
    loaded = load_nla(nla, nla_av, nla_ar, device=device, dtype=dtype)
    target = loaded.target(model)
    readings = explain_text(loaded, text, target=target, min_position=min_position, max_new_tokens=max_new_tokens,
                            temperature=temperature, max_tokens=max_tokens, progress=True, positions=wanted)
    typer.echo(format_readings(readings, calibration))


def parse_positions(positions: str | None) -> list[int] | None:
    if positions is None:
        return None
    try:
        found = [int(p) for p in positions.split(",") if p.strip()]
    except ValueError:
        raise NLAError(f"--positions {positions!r} is not a list of whole numbers; e.g. 3,7,-1") from None
    if not found:
        raise NLAError("--positions names no position; e.g. --positions -1 for the last token")
    return found


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the demo's pages go (index.html and one trace per text)."),
    nla: str = typer.Option("default", "--nla", help="The NLA that reads (default: the one shipped in nla)."),
    device: str = opt_device(help=READ_DEVICE_HELP),
):
    """The main job: the shipped NLA reads built-in texts and a chat token by token, with each explanation's score."""
    check_out_folder(out)
    from nla.autoencoder.shipped import default_dir, is_default
    from nla.reading.demo import extraction_demo, run_demo

    if is_default(nla) and not (default_dir() / "av_adapter").exists():
        typer.echo("this install of nla has no shipped NLA (nla/default_nla/ is missing; reinstall nla to get "
                   "it); showing the first stage instead: the default target's activations.\n")
        extraction_demo(out, echo=typer.echo)
        return
    run_demo(out, nla=nla, echo=typer.echo, device=device)
