"""Settings of `nla rl`, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.errors import NLAError

REWARD_KINDS = ("mse", "log_mse")
KL_ESTIMATORS = ("k1", "k3")


@dataclass
class RLConfig:
    nla: str | Path | None  # an SFT NLA folder (av/ + ar/ or adapters), or a hub prefix; None: nla_av + nla_ar
    data: Path  # activations parquet (the dataset's rl split); explanations are not needed
    out: Path  # run folder: rl_state/, rl_metrics.jsonl, rl_samples.jsonl, then av/ and ar/
    eval_data: Path | None = None  # held-out activations (the validation split) for FVE during training
    eval_rows: int = 32  # how many held-out activations the FVE is measured on (a fixed set)
    steps: int = 50
    batch_size: int = 4  # activations per step (across all processes); each gets group_size samples
    group_size: int = 4  # GRPO group: explanations sampled per activation
    av_lr: float = 1e-4  # LoRA on the AV (the reference's 1e-5 is for full fine-tuning)
    ar_lr: float = 5e-5
    lora_rank: int = 16  # AV LoRA rank; 0 trains every weight (and keeps a frozen reference copy if kl_coef > 0)
    ar_lora_rank: int = 16  # AR LoRA rank on blocks 0..K; 0 trains those blocks fully
    clip: float = 0.2  # PPO clip epsilon on the importance ratio
    kl_coef: float = 0.01  # weight of the KL to the SFT AV; 0 skips the reference pass
    kl_estimator: str = "k3"  # the per-token KL in the loss (both k1 and k3 are logged)
    temperature: float = 1.0
    max_response_tokens: int = 150  # a sample that reaches the cap without EOS is truncated: a failure
    reward: str = "mse"  # "mse": -MSE; "log_mse": -log MSE (sharper near a perfect reconstruction)
    failure_reward: float = -2.0  # untagged or truncated samples
    length_penalty: float = 0.0  # subtracted from the reward per response token
    max_grad_norm: float = 1.0
    warmup_steps: int = 2
    checkpoint_every: int = 10
    sample_every: int = 10  # log a few explanations to rl_samples.jsonl every N steps
    eval_every: int = 25  # held-out FVE every N steps (and before the first and after the last)
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # bf16 on CUDA, fp32 on CPU
    nla_av: str | None = None  # the AV and AR as released folders or hub ids, instead of nla
    nla_ar: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        self.data, self.out = Path(self.data), Path(self.out)
        self.eval_data = Path(self.eval_data) if self.eval_data is not None else None
        if self.steps < 1 or self.batch_size < 1 or self.eval_rows < 1:
            raise NLAError("steps, batch-size and eval-rows must be at least 1")
        if self.group_size < 2:
            raise NLAError("group-size must be at least 2: GRPO compares samples within a group")
        if self.av_lr <= 0 or self.ar_lr < 0 or self.lora_rank < 0 or self.ar_lora_rank < 0:
            raise NLAError("av-lr must be positive, ar-lr >= 0 (0 freezes the AR) and LoRA ranks >= 0")
        if not 0 < self.clip < 1 or self.kl_coef < 0 or self.length_penalty < 0:
            raise NLAError("clip must be in (0, 1); kl-coef and length-penalty must be >= 0")
        if self.temperature <= 0 or self.max_response_tokens < 1:
            raise NLAError("temperature must be positive and max-response-tokens at least 1")
        if self.reward not in REWARD_KINDS:
            raise NLAError(f"reward must be one of {', '.join(REWARD_KINDS)}, not {self.reward!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise NLAError(f"kl-estimator must be one of {', '.join(KL_ESTIMATORS)}, not {self.kl_estimator!r}")
        if min(self.checkpoint_every, self.sample_every, self.eval_every) < 1 or self.warmup_steps < 0:
            raise NLAError("checkpoint-every, sample-every and eval-every must be at least 1")
