"""Data commands: info, extract, explain-data, build-corpus."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

from nla.cli.common import (
    CORPUS_HELP,
    EXTRACT,
    MODEL_HELP,
    SPLIT,
    app,
    checked_dtype,
    opt_device,
    opt_dtype,
    options_from,
    user_errors,
)
from nla.data.config import ExtractConfig
from nla.data.sampling import SplitFractions
from nla.explainers.config import ExplainDataConfig
from nla.inputs import check_out_folder


@app.command()
@user_errors
def info(
    model: str = typer.Option(EXTRACT["model"], help=MODEL_HELP),
    layer: Optional[int] = typer.Option(None, help="Layer K (output of block K); default floor(2L/3)."),
    corpus: str = typer.Option(EXTRACT["corpus"], help=CORPUS_HELP),
    max_docs: int = typer.Option(64, help="Documents used for the norm statistics."),
    min_position: int = typer.Option(EXTRACT["min_position"], help="Ignore earlier positions (outlier norms)."),
    device: str = opt_device(EXTRACT["device"]),
    dtype: str = opt_dtype(),
    trust_remote_code: bool = typer.Option(False, help="Run a hub model's own code (only if you trust it)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    nla: Optional[str] = typer.Option(None, "--nla", help="Instead: what is known of an NLA (a registry name, hub "
                                      "prefix or folder): target, layer, published FVE, memory; nothing is loaded."),
    nlas: bool = typer.Option(False, "--nlas", help="Instead: list the known NLAs (src/nla/registry.yaml)."),
):
    """Layer count, d_model, default layer, and activation-norm statistics at a layer (or, with --nla / --nlas,
    what is known of NLAs)."""
    if nla is not None or nlas:
        return _nla_info(nla, nlas, as_json)
    from nla.data.info import target_info
    from nla.models import load_target

    target = load_target(model, device=device, dtype=checked_dtype(dtype), trust_remote_code=trust_remote_code)
    result = target_info(target, layer=layer, corpus=corpus, max_docs=max_docs,
                         min_position=min_position)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key not in ("activation_norm", "suggested_injection_scale"):
            typer.echo(f"{key:>26}: {value}")
    norms = result["activation_norm"]
    label = f"activation norm at layer {result['layer']}"
    typer.echo(f"{label:>26}: mean {norms['mean']:.1f}, p50 {norms['p50']:.1f}, "
               f"p90 {norms['p90']:.1f}, p99 {norms['p99']:.1f}, max {norms['max']:.1f} "
               f"({norms['count']} positions in {norms['documents']} documents)")
    typer.echo(f"{'suggested injection scale':>26}: {result['suggested_injection_scale']:g}")


def _nla_info(nla: str | None, nlas: bool, as_json: bool) -> None:
    from nla.autoencoder.hub import nla_facts
    from nla.registry import registry

    if nlas:
        rows = [{"name": name, **entry} for name, entry in registry().items()]
        if as_json:
            return typer.echo(json.dumps(rows, indent=2))
        typer.echo(f"{'name':<18} {'target':<40} {'K/L':>6} {'FVE':>6} {'bf16 GB':>8}  source")
        for r in rows:
            typer.echo(f"{r['name']:<18} {r['target']:<40} {str(r['layer']) + '/' + str(r['layers']):>6} "
                       f"{r['fve']:>6.3f} {r['memory_gb']:>8.1f}  {r['source']}")
        return None
    facts = nla_facts(nla)
    if as_json:
        return typer.echo(json.dumps(facts, indent=2))
    for key, value in facts.items():
        typer.echo(f"{key:>16}: {value}")
    return None


@app.command()
@user_errors
@options_from(ExtractConfig, skip=("splits",), convert={"dtype": checked_dtype})
def extract(
    cfg: ExtractConfig,
    validation: float = typer.Option(SPLIT["validation"], help="Fraction of documents held out for validation."),
    test: float = typer.Option(SPLIT["test"], help="Fraction of documents held out for test."),
):
    """Extract residual-stream activations from a corpus into a training-ready dataset."""
    check_out_folder(cfg.out)
    from nla.data.extract import extract as run_extract
    from nla.data.info import format_summary

    cfg = dataclasses.replace(cfg, splits=SplitFractions(validation=validation, test=test))
    typer.echo(format_summary(run_extract(cfg), cfg.out))


@app.command("explain-data")
@user_errors
@options_from(ExplainDataConfig)
def explain_data(cfg: ExplainDataConfig):
    """Write warm-start explanations for the SFT splits of an activation dataset."""
    check_out_folder(cfg.out)
    from nla.explainers.stage import explain_data as run_explain_data

    summary = run_explain_data(cfg)
    for split, counts in summary["splits"].items():
        typer.echo(f"{split}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    typer.echo(f"explanations written to {cfg.out}/")


@app.command("build-corpus")
@user_errors
def build_corpus(
    out: Path = typer.Option(..., help="Output .jsonl.gz (the shipped one is src/nla/data/default_corpus.jsonl.gz)."),
    model: str = typer.Option(EXTRACT["model"], help="Instruction-tuned model that writes the generated part."),
    limit: Optional[int] = typer.Option(None, help="Generate only the first N documents (for a quick look)."),
    batch_size: int = typer.Option(64, help="Documents generated together."),
):
    """Regenerate the embedded default corpus (resumable; ~40 min on 2 CPU cores)."""
    from nla.data.build_corpus import BuildConfig
    from nla.data.build_corpus import build_corpus as run_build

    typer.echo(json.dumps(run_build(BuildConfig(out=out, model=model, limit=limit, batch_size=batch_size)), indent=2))
