"""Training commands: train-ar, train-av, rl, export, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nla.cli.common import (
    AR,
    AV,
    EXTRACT,
    MODEL_HELP,
    RL,
    app,
    checked_dtype,
    opt_device,
    opt_dtype,
    opt_nla_ar,
    opt_nla_av,
    user_errors,
)
from nla.inputs import check_out_folder
from nla.rl.config import RLConfig
from nla.train.config import AVTrainConfig

EXPORT_HELP = ("With LoRA, also write the merged released folder (a full copy of the model; nla export RUN "
               "writes it later). Without it the run keeps its adapter only, which everything in nla reads.")


@app.command("train-ar")
@user_errors
def train_ar(
    data: Path = typer.Option(..., help="Explanations parquet from nla explain-data (e.g. .../ar_sft.parquet)."),
    out: Path = typer.Option(..., help="Run folder (may be shared with train-av): ar_metrics.jsonl, ar_state/, "
                             "ar_adapter/ (LoRA) or ar/."),
    model: Optional[str] = typer.Option(None, help="Default: the dataset's model. " + MODEL_HELP),
    layer: Optional[int] = typer.Option(None, help="Default: the dataset's layer."),
    lora_rank: int = typer.Option(AR["lora_rank"], help="LoRA rank; 0 trains blocks 0..K fully."),
    lr: float = typer.Option(AR["lr"], help="Peak learning rate (warmup, then cosine to 10%)."),
    batch_size: int = typer.Option(AR["batch_size"]),
    epochs: float = typer.Option(AR["epochs"]),
    checkpoint_every: int = typer.Option(AR["checkpoint_every"], help="Steps between resumable checkpoints."),
    text_column: str = typer.Option(AR["text_column"], help="Column the AR reads; detokenized_text_truncated "
                                    "trains the text-oracle AR for nla eval --oracle-ar."),
    device: str = opt_device(EXTRACT["device"]),
    dtype: str = opt_dtype(),
    overwrite: bool = typer.Option(False, help="Start over, replacing a run in --out."),
    export: bool = typer.Option(False, "--export", help=EXPORT_HELP),
):
    """Train the reconstructor (AR) on (explanation, activation) pairs; a rerun resumes."""
    check_out_folder(out)
    from nla.train.ar import ARTrainConfig
    from nla.train.ar import train_ar as run_train_ar

    result = run_train_ar(ARTrainConfig(data=data, out=out, model=model, layer=layer, lora_rank=lora_rank, lr=lr,
                                        batch_size=batch_size, epochs=epochs, checkpoint_every=checkpoint_every,
                                        text_column=text_column, device=device, dtype=checked_dtype(dtype),
                                        overwrite=overwrite, export=export))
    if result["main_process"]:  # under accelerate launch / torchrun, one process reports
        typer.echo(f"trained the AR for {result['steps']} steps; folder: {result['out']}")


@app.command("train-av")
@user_errors
def train_av(
    data: Path = typer.Option(..., help="Explanations parquet from nla explain-data (e.g. .../av_sft.parquet)."),
    out: Path = typer.Option(..., help="Run folder (may be shared with train-ar): av_metrics.jsonl, av_state/, "
                             "av_adapter/ (LoRA) or av/."),
    model: Optional[str] = typer.Option(None, help="Default: the dataset's model. " + MODEL_HELP),
    layer: Optional[int] = typer.Option(None, help="Default: the dataset's layer."),
    injection_scale: Optional[float] = typer.Option(None, help="Default: a round number just above the mean norm."),
    shuffle_activations: bool = typer.Option(False, help="Control run: pair explanations with other activations."),
    injection: str = typer.Option(AV["injection"], help="embedding (the released site: the marker's token "
                                  "embedding) or residual (block K's output at the marker; reads faster)."),
    injection_layer: Optional[int] = typer.Option(None, help="Residual only: the block whose output takes the "
                                                  "vector, 0..K (default K)."),
    lora_rank: int = typer.Option(AV["lora_rank"], help="LoRA rank; 0 trains every weight."),
    init_from: Optional[str] = typer.Option(None, help="Warm start: an NLA folder (or default) whose AV adapter "
                                            "this run keeps training (its rank, injection site and scale)."),
    lr: float = typer.Option(AV["lr"], help="Peak learning rate (warmup, then cosine to 10%)."),
    batch_size: int = typer.Option(AV["batch_size"]),
    epochs: float = typer.Option(AV["epochs"]),
    checkpoint_every: int = typer.Option(AV["checkpoint_every"], help="Steps between resumable checkpoints."),
    device: str = opt_device(EXTRACT["device"]),
    dtype: str = opt_dtype(),
    overwrite: bool = typer.Option(False, help="Start over, replacing a run in --out."),
    export: bool = typer.Option(False, "--export", help=EXPORT_HELP),
):
    """Train the verbalizer (AV) to write explanations of injected activations; a rerun resumes."""
    check_out_folder(out)
    from nla.train.av import train_av as run_train_av

    result = run_train_av(AVTrainConfig(data=data, out=out, model=model, layer=layer, injection_scale=injection_scale,
                                        shuffle_activations=shuffle_activations, injection=injection,
                                        injection_layer=injection_layer, lora_rank=lora_rank, init_from=init_from,
                                        lr=lr,
                                        batch_size=batch_size, epochs=epochs, checkpoint_every=checkpoint_every,
                                        device=device, dtype=checked_dtype(dtype), overwrite=overwrite,
                                        export=export))
    if result["main_process"]:  # under accelerate launch / torchrun, one process reports
        typer.echo(f"trained the AV for {result['steps']} steps (injection scale {result['injection_scale']:g}); "
                   f"folder: {result['out']}")


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
def rl(
    nla: Optional[str] = typer.Option(None, "--nla", help="The SFT NLA folder (av/ + ar/ or their adapters), e.g. "
                                      "from train-ar + train-av, or a hub prefix (its -av and -ar repositories)."),
    nla_av: Optional[str] = opt_nla_av(),
    nla_ar: Optional[str] = opt_nla_ar(),
    data: Path = typer.Option(..., help="Activations to train on: the dataset's rl split (e.g. runs/acts/rl.parquet)."),
    out: Path = typer.Option(..., help="Run folder: rl_metrics.jsonl, rl_samples.jsonl, rl_state/, then "
                                      "av_adapter/ and ar_adapter/ (av/, ar/ where the SFT NLA had no adapters)."),
    eval_data: Optional[Path] = typer.Option(None, help="Held-out activations (validation split) for FVE."),
    eval_rows: int = typer.Option(RL["eval_rows"], help="Held-out activations in the fixed FVE set."),
    steps: int = typer.Option(RL["steps"]),
    batch_size: int = typer.Option(RL["batch_size"], help="Activations per step, over all processes."),
    group_size: int = typer.Option(RL["group_size"], help="Explanations sampled per activation (GRPO group)."),
    av_lr: float = typer.Option(RL["av_lr"], help="AV (LoRA) learning rate."),
    ar_lr: float = typer.Option(RL["ar_lr"], help="AR learning rate; 0 keeps the AR fixed."),
    lora_rank: int = typer.Option(RL["lora_rank"], help="AV LoRA rank; 0 trains every weight."),
    ar_lora_rank: int = typer.Option(RL["ar_lora_rank"], help="AR LoRA rank; 0 trains blocks 0..K fully."),
    kl_coef: float = typer.Option(RL["kl_coef"], help="Weight of the KL to the SFT AV; 0 turns it off."),
    kl_estimator: str = typer.Option(RL["kl_estimator"], help="k3 or k1 (the per-token KL in the loss)."),
    clip: float = typer.Option(RL["clip"], help="Clip epsilon of the importance ratio."),
    temperature: float = typer.Option(RL["temperature"], help="Sampling temperature of the rollouts."),
    max_response_tokens: int = typer.Option(RL["max_response_tokens"], help="Longer samples are truncated: failures."),
    reward: str = typer.Option(RL["reward"], help="mse (-MSE) or log_mse (-log MSE)."),
    failure_reward: float = typer.Option(RL["failure_reward"], help="Reward of an untagged or truncated sample."),
    length_penalty: float = typer.Option(RL["length_penalty"], help="Subtracted from the reward per token."),
    checkpoint_every: int = typer.Option(RL["checkpoint_every"], help="Steps between resumable checkpoints."),
    sample_every: int = typer.Option(RL["sample_every"], help="Steps between logged sample explanations."),
    eval_every: int = typer.Option(RL["eval_every"], help="Steps between held-out FVE measurements."),
    seed: int = typer.Option(RL["seed"]),
    device: str = opt_device(EXTRACT["device"], "auto, cpu, cuda (under accelerate: one per process)."),
    dtype: str = opt_dtype(),
    overwrite: bool = typer.Option(False, help="Start over, replacing a run in --out."),
):
    """Improve an SFT NLA with GRPO: the AV is rewarded by the AR's reconstruction; a rerun resumes."""
    check_out_folder(out)
    from nla.rl.run import rl as run_rl

    result = run_rl(RLConfig(nla=nla, nla_av=nla_av, nla_ar=nla_ar, dtype=checked_dtype(dtype), data=data, out=out,
                             eval_data=eval_data, eval_rows=eval_rows, steps=steps,
                             batch_size=batch_size, group_size=group_size, av_lr=av_lr, ar_lr=ar_lr,
                             lora_rank=lora_rank, ar_lora_rank=ar_lora_rank, kl_coef=kl_coef,
                             kl_estimator=kl_estimator, clip=clip, temperature=temperature,
                             max_response_tokens=max_response_tokens, reward=reward, failure_reward=failure_reward,
                             length_penalty=length_penalty, checkpoint_every=checkpoint_every,
                             sample_every=sample_every, eval_every=eval_every, seed=seed, device=device,
                             overwrite=overwrite))
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
    out: Path = typer.Option(..., help="Run folder: acts/, sft/, refit/, rl/, eval/, train_config.yaml, "
                             "stages.json."),
    preset: Optional[str] = typer.Option(None, help="smollm2-135m (the shipped default's recipe) or gemma3-270m."),
    config: Optional[Path] = typer.Option(None, help="A YAML config (see src/nla/train/presets/ for the keys)."),
):
    """The whole pipeline from one config: extract, explain, SFT of AR and AV, RL, eval; a rerun resumes."""
    check_out_folder(out)
    from nla.errors import NLAError
    from nla.eval.evaluate import format_result
    from nla.train.pipeline import load_config, preset_path, run_pipeline

    if (preset is None) == (config is None):
        raise NLAError("pass exactly one of --preset NAME or --config FILE")
    result = run_pipeline(load_config(config or preset_path(preset)), out, echo=typer.echo)
    typer.echo(format_result(result["eval"]))
    minutes = sum(s["wall_seconds"] for s in result["stages"].values()) / 60
    typer.echo("stages: " + ", ".join(f"{k} {v['wall_seconds'] / 60:.1f} min" for k, v in result["stages"].items())
               + f" (total {minutes:.1f} min); NLA: {result['eval']['nla']}, report: {out}/eval/eval.json")
