"""Reader commands: trace, steer, serve, calibrate."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Optional

import typer

from nla.cli.common import (
    EXTRACT,
    MODEL_HELP,
    app,
    checked_dtype,
    opt_dtype,
    opt_nla,
    opt_nla_ar,
    opt_nla_av,
    opt_temperature,
    user_errors,
)
from nla.errors import NLAError
from nla.reading.config import TraceSettings

TRACE = TraceSettings()


@app.command("trace")
@user_errors
def trace(
    text: Optional[str] = typer.Argument(None, help="The text to trace (or use --file / --chat)."),
    out: Path = typer.Option(..., help="Output folder: trace.json and trace.html (opens in a browser, offline)."),
    nla: Optional[str] = opt_nla(),
    nla_av: Optional[str] = opt_nla_av(),
    nla_ar: Optional[str] = opt_nla_ar(),
    file: Optional[Path] = typer.Option(None, "--file", help="Trace a UTF-8 text file."),
    chat: Optional[Path] = typer.Option(None, "--chat", help="Trace a chat: a JSON list of {role, content} "
                                        "messages, rendered with the target's chat template."),
    template_system_prompt: bool = typer.Option(False, help="With --chat and no system message: trace the default "
                                                "system prompt the target's template adds (default: leave it out)."),
    continue_tokens: int = typer.Option(0, "--continue", help="Let the target write N more tokens and trace them."),
    model: Optional[str] = typer.Option(None, help="The target; default: the NLA's. " + MODEL_HELP),
    min_position: int = typer.Option(TRACE.min_position, help="Show earlier tokens without tracing them."),
    max_new_tokens: int = typer.Option(TRACE.max_new_tokens, help="Longest explanation; one cut there is failed."),
    batch_size: int = typer.Option(TRACE.batch_size, help="Tokens explained together."),
    temperature: float = opt_temperature(),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    dtype: str = opt_dtype(),
    overwrite: bool = typer.Option(False, help="Replace a trace already in --out."),
):
    """Every token's explanation, fidelity score (High/Medium/Low) and claim checks -> OUT/trace.json + trace.html.
    A killed run resumes: rerun the same command."""
    from nla.reading.document import TRACE_HTML, check_output
    from nla.reading.prompt import Prompt
    from nla.reading.trace import Reader, trace_to_folder

    if sum(x is not None for x in (text, file, chat)) != 1:
        raise NLAError("give exactly one of: TEXT, --file F, --chat F.json")
    prompt = Prompt(text=text) if text is not None else Prompt.from_file(file) if file else \
        Prompt.from_chat_file(chat, template_system_prompt)
    settings = TraceSettings(max_new_tokens=max_new_tokens, batch_size=batch_size, min_position=min_position,
                             continue_tokens=continue_tokens, temperature=temperature)
    check_output(out, overwrite)  # before minutes of model loading
    reader = Reader.load(nla, av=nla_av, ar=nla_ar, model=model, device=device, dtype=checked_dtype(dtype),
                         max_new_tokens=max_new_tokens, progress=True)
    result = trace_to_folder(reader, prompt, out, settings, overwrite=overwrite)
    summary, claims = result.summary, result.summary["claims"]
    if result.document["input"].get("note"):
        typer.echo(f"note: {result.document['input']['note']}")
    labels = ", ".join(f"{name} {count}" for name, count in summary["labels"].items())
    typer.echo(f"traced {summary['traced']} tokens in {result.document['seconds']:.1f} s: {labels}")
    typer.echo(f"claims: {claims['claims']} ({_share(claims['negligible_share'])} negligible); quotes: "
               f"{claims['quotes']} ({_share(claims['flagged_share'])} not found before their token); predictions: "
               f"{claims['checked_predictions']} ({_share(claims['supported_prediction_share'])} among the target's "
               "5 likeliest next tokens)")
    typer.echo(f"calibration: {result.document['calibration']['note']}")
    typer.echo(f"wrote {out}/trace.json and {out}/{TRACE_HTML} (open it in a browser)")


STEER_HELP = "FROM=>TO: replace FROM with TO in the explanation (every occurrence)."


@app.command("steer")
@user_errors
def steer(
    text: Optional[str] = typer.Argument(None, help="The text the target continues (or use --file / --chat)."),
    out: Path = typer.Option(..., help="Output folder: steer.json and steer.html."),
    edit: Optional[str] = typer.Option(None, help=STEER_HELP),
    explanation_file: Optional[Path] = typer.Option(None, help="A UTF-8 file with the whole edited explanation."),
    nla: Optional[str] = opt_nla(),
    nla_av: Optional[str] = opt_nla_av(),
    nla_ar: Optional[str] = opt_nla_ar(),
    file: Optional[Path] = typer.Option(None, "--file", help="Continue a UTF-8 text file."),
    chat: Optional[Path] = typer.Option(None, "--chat", help="Continue a chat (JSON list of {role, content})."),
    position: int = typer.Option(-1, help="The token whose explanation is edited (negative: from the end)."),
    alpha: str = typer.Option("0.5,1,2,4", help="Steering strengths, comma-separated (the vector has the "
                              "activation's norm at 1)."),
    all_positions: bool = typer.Option(False, help="Add the vector at every later position too (default: at the "
                                       "read token only)."),
    max_new_tokens: int = typer.Option(24, help="Tokens the target writes per continuation."),
    temperature: float = typer.Option(0.8, help="The sampled continuation's temperature (greedy is written too)."),
    seed: int = typer.Option(0, help="Seed of the sampled continuations."),
    model: Optional[str] = typer.Option(None, help="The target; default: the NLA's. " + MODEL_HELP),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    dtype: str = opt_dtype(),
    overwrite: bool = typer.Option(False, help="Replace a steer.json already in --out."),
):
    """Edit a token's explanation and steer the target with AR(edited) - AR(original): continuations before and
    after for each alpha -> OUT/steer.json + steer.html."""
    from nla.atomic import write_json, write_text
    from nla.layout import STEER_HTML, STEER_JSON
    from nla.reading.document import check_output
    from nla.reading.prompt import Prompt
    from nla.reading.steer import Edit, SteerSettings, steer_page
    from nla.reading.steer import steer as steer_text
    from nla.reading.trace import Reader

    if sum(x is not None for x in (text, file, chat)) != 1:
        raise NLAError("give exactly one of: TEXT, --file F, --chat F.json")
    if (edit is None) == (explanation_file is None):
        raise NLAError("give exactly one of --edit FROM=>TO and --explanation-file F")
    try:
        alphas = tuple(float(a) for a in alpha.split(","))
    except ValueError:
        raise NLAError(f"--alpha {alpha!r} is not a comma-separated list of numbers (e.g. 0.5,1,2,4)") from None
    settings = SteerSettings(alphas=alphas, position=position, all_positions=all_positions,
                             max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    change = {"edit": Edit.parse(edit)} if edit else {"explanation": Prompt.from_file(explanation_file).text}
    prompt = Prompt(text=text) if text is not None else Prompt.from_file(file) if file else Prompt.from_chat_file(chat)
    check_output(out, overwrite, STEER_JSON, "a steering run")  # before minutes of model loading
    reader = Reader.load(nla, av=nla_av, ar=nla_ar, model=model, device=device, dtype=checked_dtype(dtype))
    doc = steer_text(reader, prompt, settings, **change)
    out.mkdir(parents=True, exist_ok=True)
    (out / STEER_JSON).unlink(missing_ok=True)  # steer.json, written last, marks a finished run
    write_text(out / STEER_HTML, steer_page(doc))
    write_json(out / STEER_JSON, doc)
    typer.echo(f"read at position {doc['position']} ({doc['token']!r}): {doc['explanation']}")
    typer.echo(f"edited: {doc['edited']}")
    for run in doc["runs"]:
        typer.echo(f"alpha {run['alpha']:g}: {run['greedy']['text']!r} (ppl {run['greedy']['perplexity']})")
    typer.echo(f"wrote {out}/{STEER_JSON} and {out}/{STEER_HTML}")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


@app.command("calibrate")
@user_errors
def calibrate(
    nla: Path = typer.Option(..., "--nla", help="An NLA folder; calibration.json is written into it."),
    data: Optional[Path] = typer.Option(None, help="Held-out activations; default: the NLA's dataset validation "
                                        "split."),
    max_rows: Optional[int] = typer.Option(256, help="Use a seeded sample of N rows (0: all)."),
    max_new_tokens: int = typer.Option(TRACE.max_new_tokens, help="Longest explanation, as nla trace reads."),
    batch_size: int = typer.Option(TRACE.batch_size),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    dtype: str = opt_dtype(),
    overwrite: bool = typer.Option(False, help="Replace the NLA's calibration.json."),
    from_eval: Optional[Path] = typer.Option(None, help="An nla eval folder of this NLA: calibrate on the rows it read "
                                             "(--data and --max-rows do not apply) with its explanations, instead of "
                                             "explaining them again."),
):
    """The NLA's score calibration on held-out data: B, the High/Medium/Low thresholds and the claim report."""
    if max_rows is not None and max_rows < 0:  # before minutes of model loading
        raise NLAError(f"--max-rows {max_rows} is negative; pass a row count, or 0 for all rows")
    if from_eval is not None and data is not None:
        raise NLAError("--from-eval calibrates on the rows that evaluation read; drop --data (or --from-eval)")
    TraceSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)  # checks both, as nla trace does
    from nla.reading.calibration import calibrate as run_calibrate
    from nla.reading.calibration import calibration_path

    calibration = run_calibrate(nla, data, max_rows=max_rows or None, max_new_tokens=max_new_tokens,
                                batch_size=batch_size, device=device, dtype=checked_dtype(dtype), overwrite=overwrite,
                                from_eval=from_eval)
    claims = calibration.claims
    typer.echo(calibration.note)
    typer.echo(f"claims: {claims['claims']} in {claims['explanations']} explanations, "
               f"{_share(claims['negligible_share'])} with negligible weight (< {claims['negligible_weight']}); "
               f"quotes: {claims['quotes']}, {_share(claims['flagged_share'])} flagged (not found before the token)")
    typer.echo(f"wrote {calibration_path(nla)}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    """A port already taken is a one-line error before any model is loaded."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise NLAError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port") from err


@app.command("serve")
@user_errors
def serve(
    nla: Optional[str] = opt_nla(),
    nla_av: Optional[str] = opt_nla_av(),
    nla_ar: Optional[str] = opt_nla_ar(),
    port: int = typer.Option(8000, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback exposes the model to "
                             "your network."),
    traces: Path = typer.Option(Path("."), help="The only folder saved traces are opened from."),
    model: Optional[str] = typer.Option(None, help="The target; default: the NLA's. " + MODEL_HELP),
    max_new_tokens: int = typer.Option(TRACE.max_new_tokens, help="Longest explanation."),
    max_tokens: int = typer.Option(512, help="Most tokens one request may read (input plus continuation)."),
    max_queue: int = typer.Option(64, help="Requests that may wait for the model; later ones get 503."),
    temperature: float = opt_temperature(),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    dtype: str = opt_dtype(),
    index: Optional[Path] = typer.Option(None, "--index", help="An audit index (nla index, made with the same "
                                         "--nla) to search at /search."),
):
    """A local web viewer and JSON API: trace prompts and chats, read tokens coloured by fidelity; with --index,
    search many transcripts."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise NLAError(f"nla serve needs the serve extra ({err.name} is missing); run: pip install 'nla[serve]'") \
            from err
    from nla.reading.trace import Reader
    from nla.viewer.app import LOOPBACK_HOSTS, ServeLimits, create_app

    if not traces.is_dir():
        raise NLAError(f"--traces {traces} is not a folder; pass the folder your trace outputs are in")
    if not 0 < port < 65536:
        raise NLAError(f"--port {port} is not a port; use 1-65535")
    loopback = _loopback(host)
    if not loopback:
        typer.echo(f"warning: binding {host}: anyone who can reach this machine can run the model and read "
                   f"saved traces under {traces}; there is no authentication", err=True)
    _check_port(host, port)
    from nla.reading.index_store import open_index

    opened = open_index(index) if index is not None else None  # a bad index fails before the models load
    reader = Reader.load(nla, av=nla_av, ar=nla_ar, model=model, device=device, dtype=checked_dtype(dtype),
                         max_new_tokens=max_new_tokens, progress=True)
    limits = ServeLimits(max_tokens=max_tokens, max_queue=max_queue)
    settings = TraceSettings(max_new_tokens=max_new_tokens, temperature=temperature)
    served = create_app(reader, traces, limits=limits, settings=settings,
                        allowed_hosts=LOOPBACK_HOSTS if loopback else None, index=opened)
    typer.echo(f"serving {reader.name} (layer {reader.nla.layer}) on http://{host}:{port}/  "
               f"(API: /api/docs{'; search: /search' if opened else ''}; Ctrl-C stops)")
    uvicorn.run(served, host=host, port=port, log_level="warning")
