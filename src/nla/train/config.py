"""Settings of the training stages, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.errors import NLAError


@dataclass
class SFTConfig:
    """What every supervised stage shares."""

    data: Path  # parquet with `explanation` and `activation_vector` (nla explain-data output)
    out: Path  # run folder; AR and AV may share one (their state and metrics are named by stage)
    model: str | None = None  # default: the dataset's base_model
    layer: int | None = None  # default: the dataset's layer
    lora_rank: int = 16  # 0: full fine-tuning
    lr: float = 3e-4
    batch_size: int = 16
    epochs: float = 1.0
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # bf16 on CUDA, fp32 on CPU
    overwrite: bool = False
    # LoRA runs write their adapter (megabytes); export also writes the merged released folder (a full copy
    # of the model, what the reference client reads). `nla export RUN` writes it later from the adapter.
    export: bool = False

    def __post_init__(self):
        self.data, self.out = Path(self.data), Path(self.out)
        if self.batch_size < 1 or self.epochs <= 0 or self.lr <= 0 or self.lora_rank < 0:
            raise NLAError("batch-size, epochs and lr must be positive and lora-rank >= 0")
        if self.checkpoint_every < 1:
            raise NLAError("checkpoint-every must be at least 1")


@dataclass
class ARTrainConfig(SFTConfig):
    """The reconstructor: LoRA on blocks 0..K (lora_rank 0 trains those blocks fully) plus the head."""

    # The text the AR reads. "detokenized_text_truncated" trains the text-oracle AR that `nla eval`
    # uses as a ceiling: it sees the true context instead of an explanation of it.
    text_column: str = "explanation"

    def __post_init__(self):
        super().__post_init__()
        if not self.text_column:
            raise NLAError("text-column must name a column of the data (e.g. explanation)")


@dataclass
class AVTrainConfig(SFTConfig):
    """The verbalizer: LoRA on every linear layer (lora_rank 0 trains every weight)."""

    batch_size: int = 8  # sequences are prompt + response, longer than the AR's
    injection_scale: float | None = None  # default: a round number just above the data's mean norm
    shuffle_activations: bool = False  # the control: pair each explanation with another row's activation
    max_response_tokens: int = 150
    # embedding: the released site (the marker's token embedding); residual: block K's output at the marker,
    # which the AV's later blocks already know how to read (see autoencoder/injection.py)
    injection: str = "embedding"
    # residual only: the block whose output takes the vector (default K, the layer it was read at); an
    # earlier block gives the AV more blocks to decode it with (patchscopes read token identity best early)
    injection_layer: int | None = None
    # A warm start: an NLA folder (or "default", the shipped one) whose AV adapter this run starts from and
    # keeps training (its rank, injection site and scale come with it). None: a fresh adapter.
    init_from: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.injection_scale is not None and self.injection_scale <= 0:
            raise NLAError("injection-scale must be positive")
        if self.injection not in ("embedding", "residual"):
            raise NLAError(f"injection '{self.injection}' is unknown; use embedding or residual")
        if self.injection_layer is not None and self.injection != "residual":
            raise NLAError("injection-layer applies to --injection residual only; drop it or pass "
                           "--injection residual")
        if self.injection_layer is not None and self.injection_layer < 0:
            raise NLAError(f"injection-layer {self.injection_layer} is negative; pass a block index 0..K")
