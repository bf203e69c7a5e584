"""Settings of the training stages, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.changes import setting
from nla.errors import NLAError


@dataclass
class SFTConfig:
    """What every supervised stage shares."""

    data: Path = setting(help="Explanations parquet from nla explain-data (e.g. .../ar_sft.parquet).")
    out: Path = setting(help="Run folder; the AR and AV may share one (their state and metrics are named by stage).")
    model: str | None = setting(None, "Default: the dataset's model. Preset (smollm2-135m, gemma3-270m), local HF "
                                "folder, .gguf file, or hub id.")
    layer: int | None = setting(None, "Default: the dataset's layer.")
    lora_rank: int = setting(16, "LoRA rank; 0 trains fully.")
    lr: float = setting(3e-4, "Peak learning rate (warmup, then cosine to 10%).")
    batch_size: int = setting(16)
    epochs: float = setting(1.0)
    warmup_fraction: float = setting(0.05, "Share of the steps spent warming the learning rate up.")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.")
    checkpoint_every: int = setting(50, "Steps between resumable checkpoints.")
    seed: int = setting(0)
    device: str = setting("auto", "auto (the GPU, else the CPU), cpu, cuda, cuda:N.")
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16.")
    overwrite: bool = setting(False, "Start over, replacing a run in --out.")
    export: bool = setting(False, "With LoRA, also write the merged released folder (a full copy of the model, what "
                           "the reference client reads; nla export RUN writes it later). Without it the run keeps "
                           "its adapter only, which everything in nla reads.")

    def __post_init__(self):
        self.data, self.out = Path(self.data), Path(self.out)
        if self.batch_size < 1 or self.epochs <= 0 or self.lr <= 0 or self.lora_rank < 0:
            raise NLAError("batch-size, epochs and lr must be positive and lora-rank >= 0")
        if self.checkpoint_every < 1:
            raise NLAError("checkpoint-every must be at least 1")


@dataclass
class ARTrainConfig(SFTConfig):
    """The reconstructor: LoRA on blocks 0..K (lora_rank 0 trains those blocks fully) plus the head."""

    out: Path = setting(help="Run folder (may be shared with train-av): ar_metrics.jsonl, ar_state/, ar_adapter/ "
                        "(LoRA) or ar/.")
    text_column: str = setting("explanation", "Column the AR reads; detokenized_text_truncated trains the "
                               "text-oracle AR for nla eval --oracle-ar (it sees the true context).")
    init_from: str | None = setting(None, "Warm start: an NLA folder (or default) whose AR adapter and value head "
                                    "this run keeps training (its rank comes with it), e.g. to refit an AR on "
                                    "a new AV's texts without starting over.")

    def __post_init__(self):
        super().__post_init__()
        if not self.text_column:
            raise NLAError("text-column must name a column of the data (e.g. explanation)")


@dataclass
class AVTrainConfig(SFTConfig):
    """The verbalizer: LoRA on every linear layer (lora_rank 0 trains every weight)."""

    data: Path = setting(help="Explanations parquet from nla explain-data (e.g. .../av_sft.parquet).")
    out: Path = setting(help="Run folder (may be shared with train-ar): av_metrics.jsonl, av_state/, av_adapter/ "
                        "(LoRA) or av/.")
    batch_size: int = setting(8, "Sequences per step (prompt + response, longer than the AR's).")
    injection_scale: float | None = setting(None, "Default: a round number just above the data's mean norm.")
    shuffle_activations: bool = setting(False, "Control run: pair each explanation with another row's activation.")
    max_response_tokens: int = setting(150, "Longer explanations are cut to this many tokens for training.")
    # embedding: the released site; residual: block K's output at the marker (see autoencoder/injection.py)
    injection: str = setting("embedding", "embedding (the released site: the marker's token embedding) or residual "
                             "(block K's output at the marker, which the AV's later blocks already read; faster).")
    injection_layer: int | None = setting(None, "Residual only: the block whose output takes the vector, 0..K "
                                          "(default K; an earlier block gives the AV more blocks to decode it).")
    injection_early_layer: int | None = setting(None, "Residual only: also write the vector into this earlier "
                                                "block's output (two sites; blocks after it carry the vector "
                                                "into the prompt's later positions).")
    injection_soft_tokens: int = setting(0, "Residual only: a learned projector maps the vector to this many "
                                         "soft tokens, added at block K's output after the marker (0: none).")
    init_from: str | None = setting(None, "Warm start: an NLA folder (or default) whose AV adapter this run keeps "
                                    "training (its rank, injection site and scale come with it).")
    save_rank: int | None = setting(None, "LoRA only: store the trained adapter at this lower rank (each "
                                    "module's update cut to its largest singular directions), to train at a "
                                    "large rank and ship a small file; the sidecar records the share kept.")

    def __post_init__(self):
        super().__post_init__()
        if self.injection_scale is not None and self.injection_scale <= 0:
            raise NLAError("injection-scale must be positive")
        if self.injection not in ("embedding", "residual"):
            raise NLAError(f"injection '{self.injection}' is unknown; use embedding or residual")
        for name in ("injection_layer", "injection_early_layer", "injection_soft_tokens"):
            if getattr(self, name) not in (None, 0) and self.injection != "residual":
                raise NLAError(f"{name.replace('_', '-')} applies to --injection residual only; drop it or pass "
                               "--injection residual")
        if self.save_rank is not None and self.lora_rank == 0:
            raise NLAError("save-rank applies to LoRA only (lora-rank 0 trains every weight); drop it or pass "
                           "--lora-rank N")
        if self.save_rank is not None and (self.save_rank < 1 or (self.init_from is None and
                                                                    self.save_rank >= self.lora_rank)):
            raise NLAError(f"save-rank {self.save_rank} must be below the LoRA rank ({self.lora_rank}) and at "
                           f"least 1; pass 1..{self.lora_rank - 1}, or drop it")
        if self.injection_soft_tokens < 0:
            raise NLAError(f"injection-soft-tokens {self.injection_soft_tokens} is negative; pass a count of at least 1, or 0 for none")
        if self.injection_layer is not None and self.injection_layer < 0:
            raise NLAError(f"injection-layer {self.injection_layer} is negative; pass a block index 0..K")


@dataclass
class ExpertConfig:
    """Expert iteration on an NLA's AV (the `expert` stage of nla train; train/expert.py)."""

    nla: Path = setting(help="The NLA whose AV trains on: a folder with LoRA adapters (av_adapter/ and "
                        "ar_adapter/), e.g. a refit/ stage's, or default.")
    data: Path = setting(help="av_sft explanations from nla explain-data: the activations the rounds draw from.")
    out: Path = setting(help="Folder: round-R/ (each round's candidates, pairs and AV), then av_adapter/, "
                        "ar_adapter/ (a complete NLA) and expert.json, written last.")
    rounds: int = setting(3, "Rounds, each from the last one's AV (three measured best: docs/open-vocabulary.md "
                          "section 7).")
    rows: int = setting(128, "Fresh activations a round: no two rounds draw the same row.")
    samples: int = setting(3, "Sampled explanations beside the greedy one; the AR keeps the best of them.")
    temperature: float = setting(1.0, "The samples' temperature.")
    grounded_quotes: bool = setting(False, "Pass over a candidate that quotes words its context does not hold "
                                    "where the row has one that does not (data needs the context column). "
                                    "Measured worse: the AV quotes less, not truer (docs/open-vocabulary.md "
                                    "section 7).")
    lr: float = setting(5e-4, "The AV's peak learning rate in each round.")
    batch_size: int = setting(8, "The AV's training batch.")
    epochs: float = setting(2.0, "Epochs over a round's chosen pairs.")
    max_new_tokens: int = setting(120, "Longest explanation, in tokens.")
    explain_batch_size: int = setting(32, "Activations the AV explains together.")
    seed: int = setting(0, "Which rows each round draws, and the sampling.")
    device: str = setting("auto", "auto (the GPU, else the CPU), cpu, cuda, cuda:N.")
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16.")

    def __post_init__(self):
        self.nla, self.data, self.out = Path(self.nla), Path(self.data), Path(self.out)
        if min(self.rounds, self.rows, self.samples, self.batch_size, self.explain_batch_size,
               self.max_new_tokens) < 1:
            raise NLAError("expert: rounds, rows, samples, batch-size, explain-batch-size and max-new-tokens "
                           "must be at least 1")
        if self.lr <= 0 or self.epochs <= 0 or self.temperature <= 0:
            raise NLAError("expert: lr, epochs and temperature must be positive (samples at temperature 0 "
                           "would all repeat the greedy explanation)")
