"""The `nla` command line: a thin layer over the stage functions.

    nla demo                      # the main job on the embedded default
    nla info --model gemma3-270m  # layers, d_model, activation norms
    nla extract --out runs/acts   # corpus -> activation dataset
    nla explain-data --dataset runs/acts   # warm-start explanations for the SFT splits
    nla explain "some text" --nla runs/nla # every token's explanation and fidelity
    nla eval --nla runs/nla --out runs/eval  # held-out FVE next to its controls, JSON + PNGs
    nla build-corpus --out FILE   # regenerate the embedded default corpus
    nla rl --nla runs/nla --data runs/acts/rl.parquet --out runs/rl   # GRPO on the AV with a live AR
    nla plot runs/rl              # PNG curves of an RL run
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Optional

import typer

from nla.data.config import ExtractConfig, defaults
from nla.data.sampling import SplitFractions
from nla.errors import NLAError
from nla.explainers.api import DEFAULT_CONCURRENCY, DEFAULT_MAX_RETRIES
from nla.explainers.api import DEFAULT_MODELS as DEFAULT_API_MODELS
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


@app.command()
@user_errors
def info(
    model: str = typer.Option(EXTRACT["model"], help=MODEL_HELP),
    layer: Optional[int] = typer.Option(None, help="Layer K (output of block K); default floor(2L/3)."),
    corpus: str = typer.Option(EXTRACT["corpus"], help=CORPUS_HELP),
    max_docs: int = typer.Option(64, help="Documents used for the norm statistics."),
    min_position: int = typer.Option(EXTRACT["min_position"], help="Ignore earlier positions (outlier norms)."),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    trust_remote_code: bool = typer.Option(False, help="Run a hub model's own code (only if you trust it)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
):
    """Layer count, d_model, default layer, and activation-norm statistics at a layer."""
    from nla.data.info import target_info
    from nla.models import load_target

    target = load_target(model, device=device, trust_remote_code=trust_remote_code)
    result = target_info(target, layer=layer, corpus=corpus, max_docs=max_docs,
                         min_position=min_position)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key not in ("activation_norm", "suggested_injection_scale"):
            typer.echo(f"{key:>26}: {value}")
    norms = result["activation_norm"]
    typer.echo(f"{'activation norm at layer':>26}: mean {norms['mean']:.1f}, p50 {norms['p50']:.1f}, "
               f"p90 {norms['p90']:.1f}, p99 {norms['p99']:.1f}, max {norms['max']:.1f} "
               f"({norms['count']} positions in {norms['documents']} documents)")
    typer.echo(f"{'suggested injection scale':>26}: {result['suggested_injection_scale']:g}")


@app.command()
@user_errors
def extract(
    out: Path = typer.Option(..., help="Output folder (one parquet + sidecar per split)."),
    model: str = typer.Option(EXTRACT["model"], help=MODEL_HELP),
    corpus: str = typer.Option(EXTRACT["corpus"], help=CORPUS_HELP),
    text_field: str = typer.Option(EXTRACT["text_field"], help="Text field (.jsonl) or column (.parquet)."),
    layer: Optional[int] = typer.Option(None, help="Layer K (output of block K); default floor(2L/3)."),
    positions_per_doc: int = typer.Option(EXTRACT["positions_per_doc"], help="Positions sampled per document."),
    min_position: int = typer.Option(EXTRACT["min_position"], help="Earliest token position that may be sampled."),
    max_doc_tokens: int = typer.Option(EXTRACT["max_doc_tokens"], help="Cut longer documents to this many tokens."),
    max_docs: Optional[int] = typer.Option(None, help="Use only the first N documents."),
    seed: int = typer.Option(EXTRACT["seed"], help="Keys position sampling and splits (with the doc id)."),
    validation: float = typer.Option(SPLIT["validation"], help="Fraction of documents held out for validation."),
    test: float = typer.Option(SPLIT["test"], help="Fraction of documents held out for test."),
    batch_tokens: int = typer.Option(EXTRACT["batch_tokens"], help="Tokens per forward pass (rows x longest row)."),
    chunk_docs: int = typer.Option(EXTRACT["chunk_docs"], help="Documents per resumable chunk."),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    dtype: str = typer.Option(EXTRACT["dtype"], help="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16."),
    trust_remote_code: bool = typer.Option(False, help="Run a hub model's own code (only if you trust it)."),
    overwrite: bool = typer.Option(False, help="Replace an existing extraction in --out."),
):
    """Extract residual-stream activations from a corpus into a training-ready dataset."""
    from nla.data.extract import extract as run_extract

    cfg = ExtractConfig(out=out, model=model, corpus=corpus, text_field=text_field, layer=layer,
                        positions_per_doc=positions_per_doc, min_position=min_position,
                        max_doc_tokens=max_doc_tokens, max_docs=max_docs, seed=seed,
                        splits=SplitFractions(validation=validation, test=test), batch_tokens=batch_tokens,
                        chunk_docs=chunk_docs, device=device, dtype=dtype,
                        trust_remote_code=trust_remote_code, overwrite=overwrite)
    typer.echo(format_summary(run_extract(cfg), out))


@app.command("explain-data")
@user_errors
def explain_data(
    dataset: Path = typer.Option(..., help="A finished `nla extract` folder."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: DATASET/explanations-EXPLAINER)."),
    explainer: str = typer.Option("offline", help="Explanation backend: offline (facts only, no network), "
                                  "anthropic, or openai (also vLLM, Ollama, any compatible server via --base-url)."),
    splits: str = typer.Option("ar_sft,av_sft", help="Comma-separated splits to explain."),
    top_k: int = typer.Option(3, help="The target's next-token candidates given to the explainer."),
    api_model: Optional[str] = typer.Option(None, help="API model (default: " + ", ".join(
        f"{k} {v}" for k, v in DEFAULT_API_MODELS.items()) + ")."),
    base_url: Optional[str] = typer.Option(None, help="API base URL, e.g. http://localhost:8000/v1 for vLLM."),
    api_key_env: Optional[str] = typer.Option(None, help="Environment variable holding the API key (default: "
                                              "ANTHROPIC_API_KEY / OPENAI_API_KEY); none: a keyless local server."),
    concurrency: int = typer.Option(DEFAULT_CONCURRENCY, help="API requests in flight."),
    max_retries: int = typer.Option(DEFAULT_MAX_RETRIES, help="Retries per API request (429, 5xx, lost connection)."),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    overwrite: bool = typer.Option(False, help="Replace existing explanations in --out (API answers stay cached)."),
):
    """Write warm-start explanations for the SFT splits of an activation dataset."""
    from nla.explainers.stage import ExplainDataConfig
    from nla.explainers.stage import explain_data as run_explain_data

    cfg = ExplainDataConfig(dataset=dataset, out=out, explainer=explainer,
                            splits=tuple(s.strip() for s in splits.split(",") if s.strip()), top_k=top_k,
                            device=device, overwrite=overwrite, api_model=api_model, base_url=base_url,
                            api_key_env=api_key_env, concurrency=concurrency, max_retries=max_retries)
    summary = run_explain_data(cfg)
    for split, counts in summary["splits"].items():
        typer.echo(f"{split}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    typer.echo(f"explanations written to {cfg.out}/")


@app.command("train-ar")
@user_errors
def train_ar(
    data: Path = typer.Option(..., help="Explanations parquet from nla explain-data (e.g. .../ar_sft.parquet)."),
    out: Path = typer.Option(..., help="Run folder (may be shared with train-av): ar_metrics.jsonl, ar_state/, ar/."),
    model: Optional[str] = typer.Option(None, help="Default: the dataset's model. " + MODEL_HELP),
    layer: Optional[int] = typer.Option(None, help="Default: the dataset's layer."),
    lora_rank: int = typer.Option(AR["lora_rank"], help="LoRA rank; 0 trains blocks 0..K fully."),
    lr: float = typer.Option(AR["lr"], help="Peak learning rate (warmup, then cosine to 10%)."),
    batch_size: int = typer.Option(AR["batch_size"]),
    epochs: float = typer.Option(AR["epochs"]),
    checkpoint_every: int = typer.Option(AR["checkpoint_every"], help="Steps between resumable checkpoints."),
    text_column: str = typer.Option(AR["text_column"], help="Column the AR reads; detokenized_text_truncated "
                                    "trains the text-oracle AR for nla eval --oracle-ar."),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    overwrite: bool = typer.Option(False, help="Start over, replacing a run in --out."),
):
    """Train the reconstructor (AR) on (explanation, activation) pairs; a rerun resumes."""
    from nla.train.ar import ARTrainConfig
    from nla.train.ar import train_ar as run_train_ar

    result = run_train_ar(ARTrainConfig(data=data, out=out, model=model, layer=layer, lora_rank=lora_rank, lr=lr,
                                        batch_size=batch_size, epochs=epochs, checkpoint_every=checkpoint_every,
                                        text_column=text_column, device=device, overwrite=overwrite))
    if result["main_process"]:  # under accelerate launch / torchrun, one process reports
        typer.echo(f"trained the AR for {result['steps']} steps; released-layout folder: {result['out']}")


@app.command("train-av")
@user_errors
def train_av(
    data: Path = typer.Option(..., help="Explanations parquet from nla explain-data (e.g. .../av_sft.parquet)."),
    out: Path = typer.Option(..., help="Run folder (may be shared with train-ar): av_metrics.jsonl, av_state/, av/."),
    model: Optional[str] = typer.Option(None, help="Default: the dataset's model. " + MODEL_HELP),
    layer: Optional[int] = typer.Option(None, help="Default: the dataset's layer."),
    injection_scale: Optional[float] = typer.Option(None, help="Default: a round number just above the mean norm."),
    shuffle_activations: bool = typer.Option(False, help="Control run: pair explanations with other activations."),
    lora_rank: int = typer.Option(AV["lora_rank"], help="LoRA rank; 0 trains every weight."),
    lr: float = typer.Option(AV["lr"], help="Peak learning rate (warmup, then cosine to 10%)."),
    batch_size: int = typer.Option(AV["batch_size"]),
    epochs: float = typer.Option(AV["epochs"]),
    checkpoint_every: int = typer.Option(AV["checkpoint_every"], help="Steps between resumable checkpoints."),
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda, cuda:N."),
    overwrite: bool = typer.Option(False, help="Start over, replacing a run in --out."),
):
    """Train the verbalizer (AV) to write explanations of injected activations; a rerun resumes."""
    from nla.train.av import train_av as run_train_av

    result = run_train_av(AVTrainConfig(data=data, out=out, model=model, layer=layer, injection_scale=injection_scale,
                                        shuffle_activations=shuffle_activations, lora_rank=lora_rank, lr=lr,
                                        batch_size=batch_size, epochs=epochs, checkpoint_every=checkpoint_every,
                                        device=device, overwrite=overwrite))
    if result["main_process"]:  # under accelerate launch / torchrun, one process reports
        typer.echo(f"trained the AV for {result['steps']} steps (injection scale {result['injection_scale']:g}); "
                   f"folder: {result['out']}")


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


@app.command("export")
@user_errors
def export(
    run: Path = typer.Argument(..., help="A run folder with av_adapter/ and/or ar_adapter/ (train-av, train-ar)."),
    out: Optional[Path] = typer.Option(None, help="Where to write av/ and ar/; default: RUN itself."),
    overwrite: bool = typer.Option(False, help="Replace av/ or ar/ already in --out."),
):
    """Merge a run's LoRA adapters into released-format av/ and ar/ folders (what NLA.load and others read)."""
    from nla.autoencoder.shared import export_nla

    for folder in export_nla(run, out, overwrite=overwrite):
        typer.echo(f"wrote {folder}/")


def format_summary(summary: dict, out: Path) -> str:
    norms = summary["activation_norm"]
    splits = ", ".join(f"{k} {v}" for k, v in summary["rows_per_split"].items())
    speed = summary["tokens_per_second"]
    lines = [
        f"extracted {summary['rows']} activations from {summary['documents_used']} documents "
        f"({summary['documents_skipped_too_short']} skipped as too short) into {out}/",
        f"  model {summary['model']}, layer {summary['layer']}, d_model {summary['d_model']}; "
        f"{summary['tokens']} tokens" + (f" at {speed:.0f} tokens/s" if speed else " (all resumed from chunks)"),
        f"  rows per split: {splits}",
        f"  activation norm: mean {norms['mean']:.1f}, p50 {norms['p50']:.1f}, p99 {norms['p99']:.1f}, "
        f"max {norms['max']:.1f} -> suggested injection scale {summary['suggested_injection_scale']:g}",
    ]
    return "\n".join(lines)


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


@app.command("rl")
@user_errors
def rl(
    nla: Path = typer.Option(..., "--nla", help="The SFT NLA folder (av/ and ar/), e.g. from train-ar + train-av."),
    data: Path = typer.Option(..., help="Activations to train on: the dataset's rl split (e.g. runs/acts/rl.parquet)."),
    out: Path = typer.Option(..., help="Run folder: rl_metrics.jsonl, rl_samples.jsonl, rl_state/, then av/ and ar/."),
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
    device: str = typer.Option(EXTRACT["device"], help="auto, cpu, cuda (under accelerate: one per process)."),
    overwrite: bool = typer.Option(False, help="Start over, replacing a run in --out."),
):
    """Improve an SFT NLA with GRPO: the AV is rewarded by the AR's reconstruction; a rerun resumes."""
    from nla.rl.trainer import rl as run_rl

    result = run_rl(RLConfig(nla=nla, data=data, out=out, eval_data=eval_data, eval_rows=eval_rows, steps=steps,
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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
