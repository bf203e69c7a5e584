"""Training commands: train-ar, train-av, expert, rl, export, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nla.cli.common import (
    app,
    checked_dtype,
    options_from,
    user_errors,
)
from nla.inputs import check_out_folder
from nla.rl.config import RLConfig
from nla.train.config import ARTrainConfig, AVTrainConfig, ExpertConfig

EXPORT_HELP = ("With LoRA, also write the merged released folder (a full copy of the model; nla export RUN "
               "writes it later). Without it the run keeps its adapter only, which everything in nla reads.")


@app.command("train-ar")
@user_errors
@options_from(ARTrainConfig, convert={"dtype": checked_dtype})
def train_ar(cfg: ARTrainConfig):
    """Train the reconstructor (AR) on (explanation, activation) pairs; a rerun resumes."""
    check_out_folder(cfg.out)
    from nla.train.ar import train_ar as run_train_ar

    result = run_train_ar(cfg)
    if result["main_process"]:  # under accelerate launch / torchrun, one process reports
        typer.echo(f"trained the AR for {result['steps']} steps; folder: {result['out']}")


@app.command("train-av")
@user_errors
@options_from(AVTrainConfig, convert={"dtype": checked_dtype})
def train_av(cfg: AVTrainConfig):
    """Train the verbalizer (AV) to write explanations of injected activations; a rerun resumes."""
    check_out_folder(cfg.out)
    from nla.train.av import train_av as run_train_av

    result = run_train_av(cfg)
    if result["main_process"]:  # under accelerate launch / torchrun, one process reports
        typer.echo(f"trained the AV for {result['steps']} steps (injection scale {result['injection_scale']:g}); "
                   f"folder: {result['out']}")


@app.command("expert")
@user_errors
@options_from(ExpertConfig, convert={"dtype": checked_dtype})
def expert(cfg: ExpertConfig):
    """Train an NLA's AV on its own explanations that its AR reads best (expert iteration); a rerun resumes."""
    check_out_folder(cfg.out)
    from nla.train.expert import expert_iteration

    summary = expert_iteration(cfg)
    for number, kept in enumerate(summary["rounds"], start=1):
        typer.echo(f"round {number}: {kept['kept']}/{kept['rows']} rows kept; the AR's error on them "
                   f"{kept['greedy_mse']:.3f} greedy -> {kept['chosen_mse']:.3f} chosen")
    typer.echo(f"NLA: {cfg.out} (held-out FVE: nla eval --nla {cfg.out} --data .../validation.parquet)")


@app.command("export")
@user_errors
def export(
    run: Path = typer.Argument(..., help="A run folder with av_adapter/ and/or ar_adapter/ (train-av, train-ar)."),
    out: Optional[Path] = typer.Option(None, help="Where to write av/ and ar/; default: RUN itself."),
    overwrite: bool = typer.Option(False, help="Replace av/ or ar/ already in --out (RUN by default)."),
    dtype: str = typer.Option("float32", "--dtype", help="The written weights' dtype (merged on the CPU): "
                              "float32, bfloat16 (half the size) or float16."),
):
    """Merge a run's LoRA adapters into released-format av/ and ar/ folders (what NLA.load and others read)."""
    check_out_folder(out)
    from nla.autoencoder.meta import read_model_meta
    from nla.autoencoder.shared import export_nla, reference_client_note

    for folder in export_nla(run, out, overwrite=overwrite, dtype=checked_dtype(dtype)):
        typer.echo(f"wrote {folder}/")
        note = reference_client_note(read_model_meta(folder)) if folder.name == "av" else None
        if note:
            typer.echo(f"note: {note}", err=True)


@app.command("rl")
@user_errors
@options_from(RLConfig, convert={"dtype": checked_dtype})
def rl(cfg: RLConfig):
    """Improve an SFT NLA with GRPO: the AV is rewarded by the AR's reconstruction; a rerun resumes."""
    check_out_folder(cfg.out)
    from nla.rl.run import rl as run_rl

    result = run_rl(cfg)
    if not result["trainer"].accelerator.is_main_process:  # under accelerate launch / torchrun, one reports
        return
    for step, evaluation in sorted(result["evaluations"].items()):
        typer.echo(f"step {step}: held-out FVE {evaluation['eval_fve']:.3f} "
                   f"(shuffled control {evaluation['eval_fve_shuffled']:.3f}), "
                   f"length {evaluation['eval_length']:.1f}, failures {evaluation['eval_failure_rate']:.2f}")
    typer.echo(f"ran {result['steps']} RL steps; NLA folder: {result['out']} (curves: nla plot {result['out']})")


@app.command("plot")
@user_errors
def plot(run: Path = typer.Argument(..., help="An `nla rl` run folder (holding rl_metrics.jsonl).")):
    """Write RUN/rl_curves.png: FVE, reward, KL, explanation length, failure rate and time per step."""
    from nla.rl.plots import plot_run

    typer.echo(f"wrote {plot_run(run)}")


@app.command("train")
@user_errors
def train(
    out: Path = typer.Option(..., help="Run folder: acts/, sft/, refit/, expert/, rl/, eval/, train_config.yaml, "
                             "stages.json."),
    preset: Optional[str] = typer.Option(None, help="smollm2-135m (the shipped default's recipe) or gemma3-270m."),
    config: Optional[Path] = typer.Option(None, help="A YAML config (see src/nla/pipeline/presets/ for the keys)."),
):
    """The whole pipeline from one config: extract, explain, SFT of AR and AV, RL, eval; a rerun resumes."""
    check_out_folder(out)
    from nla.errors import NLAError
    from nla.eval.evaluate import format_result
    from nla.pipeline.train import load_config, preset_path, run_pipeline

    if (preset is None) == (config is None):
        raise NLAError("pass exactly one of --preset NAME or --config FILE")
    result = run_pipeline(load_config(config or preset_path(preset)), out, echo=typer.echo)
    typer.echo(format_result(result["eval"]))
    minutes = sum(s["wall_seconds"] for s in result["stages"].values()) / 60
    typer.echo("stages: " + ", ".join(f"{k} {v['wall_seconds'] / 60:.1f} min" for k, v in result["stages"].items())
               + f" (total {minutes:.1f} min); NLA: {result['eval']['nla']}, report: {out}/eval/eval.json")
