"""Reading commands: explain, eval, demo."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Optional

import typer

from nla.data.config import ExtractConfig
from nla.cli.common import AR, AV, CORPUS_HELP, EVAL, EXTRACT, MODEL_HELP, RL, SPLIT, app, user_errors


@app.command("eval")
@user_errors
def eval_(
    nla: Path = typer.Option(..., "--nla", help="An NLA folder holding av/ and ar/."),
    out: Path = typer.Option(..., help="Output folder: eval.json, rows.parquet, fve_by_*.png."),
    data: Optional[Path] = typer.Option(None, help="Held-out split; default: the NLA's dataset validation split."),
    max_rows: Optional[int] = typer.Option(None, help="Evaluate a seeded sample of N rows (default: all)."),
    oracle_ar: Optional[Path] = typer.Option(None, help="AR from nla train-ar --text-column "
                                             "detokenized_text_truncated: the true-context ceiling."),
    mean_from: Optional[Path] = typer.Option(None, help="Split whose mean activation is the predict-the-mean "
                                             "control; default: ar_sft.parquet next to --data."),
    batch_size: int = typer.Option(EVAL["batch_size"], help="Activations explained together (greedy)."),
    max_new_tokens: int = typer.Option(EVAL["max_new_tokens"], help="Longest explanation, in tokens."),
    seed: int = typer.Option(EVAL["seed"], help="Keys the row sample and the shuffled-AV permutation."),
    device: str = typer.Option(EVAL["device"], help="auto, cpu, cuda, cuda:N."),
    overwrite: bool = typer.Option(False, help="Replace a finished evaluation (explanations made with the same "
                                   "AV settings are reused)."),
):
    """Held-out FVE of an NLA next to its controls (shuffled AV, text-oracle AR, predict-the-mean)."""
    from nla.eval.evaluate import EvalConfig, evaluate, format_result

    result = evaluate(EvalConfig(nla=nla, out=out, data=data, max_rows=max_rows, oracle_ar=oracle_ar,
                                 mean_from=mean_from, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 seed=seed, device=device, overwrite=overwrite))
    typer.echo(format_result(result))
    typer.echo(f"written to {out}/eval.json and {out}/rows.parquet")


@app.command("explain")
@user_errors
def explain(
    text: str = typer.Argument(..., help="The text whose tokens to explain."),
    nla: Path = typer.Option(..., "--nla", help="An NLA folder holding av/ and ar/ (e.g. from train-ar + train-av)."),
    model: Optional[str] = typer.Option(None, help="The target; default: the AV's base checkpoint. " + MODEL_HELP),
    min_position: int = typer.Option(0, help="Skip earlier tokens."),
    max_new_tokens: int = typer.Option(100, help="Longest explanation, in tokens."),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
):
    """Print, for every token of TEXT, the NLA's explanation of the target's activation and its fidelity."""
    from nla.autoencoder.nla import NLA
    from nla.reading.transcript import explain_text, format_readings

    loaded = NLA.load(nla, device=device)  # with LoRA adapters, one base model serves target, AV and AR
    target = loaded.target(model, device=device)
    typer.echo(format_readings(explain_text(loaded, text, target=target, min_position=min_position,
                                            max_new_tokens=max_new_tokens)))


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the demo extraction is kept."),
    max_docs: int = typer.Option(240, help="Documents of the default corpus to extract."),
):
    """The main job on the embedded default: extract activations and show what was extracted."""
    from nla.data.dataset import read_dataset, vectors_of
    from nla.data.extract import SUMMARY
    from nla.data.extract import extract as run_extract

    if (out / SUMMARY).exists():
        typer.echo(f"reusing the finished extraction in {out}/ (delete it to run again)")
        summary = json.loads((out / SUMMARY).read_text())
    else:
        summary = run_extract(ExtractConfig(out=out, max_docs=max_docs))
    typer.echo(format_summary(summary, out))
    by_source: dict[str, int] = {}
    for key, rows in summary["rows_per_source_genre"].items():
        by_source[key.split("/")[0]] = by_source.get(key.split("/")[0], 0) + rows
    typer.echo(f"  rows per source: {', '.join(f'{k} {v}' for k, v in by_source.items())} "
               f"({len(summary['rows_per_source_genre'])} genres; see {out}/summary.json)")
    table = read_dataset(out / "validation.parquet")
    norms = (vectors_of(table) ** 2).sum(axis=1) ** 0.5
    typer.echo("\nA few held-out activations (context ... [token] -> norm):")
    for i in range(0, table.num_rows, max(1, table.num_rows // 5))[:5]:
        row = {k: table.column(k)[i].as_py() for k in ("detokenized_text_truncated", "token", "genre", "source")}
        context = row["detokenized_text_truncated"].removesuffix(row["token"]).replace("\n", " ")
        snippet = textwrap.shorten(context[-90:], 90, placeholder="...")
        typer.echo(f"  [{row['source']}/{row['genre']}] ...{snippet}[{row['token']}] -> {norms[i]:.1f}")
    typer.echo(f"\nNext: nla explain-data --dataset {out}, then nla train-ar / nla train-av (see README).")
