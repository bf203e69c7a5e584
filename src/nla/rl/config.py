"""Settings of `nla rl`, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.changes import setting
from nla.errors import NLAError

REWARD_KINDS = ("mse", "log_mse")
KL_ESTIMATORS = ("k1", "k3")


@dataclass
class RLConfig:
    data: Path = setting(help="Activations to train on: the dataset's rl split (e.g. runs/acts/rl.parquet); "
                         "explanations are not needed.")
    out: Path = setting(help="Run folder: rl_metrics.jsonl, rl_samples.jsonl, rl_state/, then av_adapter/ and "
                        "ar_adapter/ (av/, ar/ where the SFT NLA had no adapters).")
    nla: str | Path | None = setting(None, "The SFT NLA folder (av/ + ar/ or their adapters), e.g. from train-ar + "
                                     "train-av, or a hub prefix (its -av and -ar repositories).")
    nla_av: str | None = setting(None, "The AV as a released folder or hub id (with --nla-ar), instead of --nla.")
    nla_ar: str | None = setting(None, "The AR as a released folder or hub id (with --nla-av), instead of --nla.")
    eval_data: Path | None = setting(None, "Held-out activations (validation split) for FVE.")
    eval_rows: int = setting(32, "Held-out activations in the fixed FVE set.")
    steps: int = setting(50)
    batch_size: int = setting(4, "Activations per step, over all processes; each gets group-size samples.")
    group_size: int = setting(4, "Explanations sampled per activation (GRPO group).")
    av_lr: float = setting(1e-4, "AV (LoRA) learning rate (the reference's 1e-5 is for full fine-tuning).")
    ar_lr: float = setting(5e-5, "AR learning rate; 0 keeps the AR fixed.")
    lora_rank: int = setting(16, "AV LoRA rank; 0 trains every weight (and keeps a frozen reference copy if "
                             "kl-coef > 0).")
    ar_lora_rank: int = setting(16, "AR LoRA rank on blocks 0..K; 0 trains those blocks fully.")
    clip: float = setting(0.2, "Clip epsilon of the importance ratio.")
    kl_coef: float = setting(0.01, "Weight of the KL to the SFT AV; 0 turns it off (and skips the reference pass).")
    kl_estimator: str = setting("k3", "k3 or k1 (the per-token KL in the loss; both are logged).")
    temperature: float = setting(1.0, "Sampling temperature of the rollouts.")
    max_response_tokens: int = setting(150, "Longer samples are truncated: failures.")
    reward: str = setting("mse", "mse (-MSE) or log_mse (-log MSE: sharper near a perfect reconstruction).")
    failure_reward: float = setting(-2.0, "Reward of an untagged or truncated sample.")
    length_penalty: float = setting(0.0, "Subtracted from the reward per response token.")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.")
    warmup_steps: int = setting(2, "Learning-rate warmup steps.")
    checkpoint_every: int = setting(10, "Steps between resumable checkpoints.")
    sample_every: int = setting(10, "Steps between logged sample explanations (rl_samples.jsonl).")
    eval_every: int = setting(25, "Steps between held-out FVE measurements (and before the first, after the last).")
    seed: int = setting(0)
    device: str = setting("auto", "auto, cpu, cuda (under accelerate: one per process).")
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16.")
    overwrite: bool = setting(False, "Start over, replacing a run in --out.")

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
