"""`nla rl`: GRPO on the verbalizer (AV) with a live reconstructor (AR), resumable, on 1..N processes.

    nla rl --nla runs/x/nla --data runs/acts/rl.parquet --eval-data runs/acts/validation.parquet --out runs/rl
    accelerate launch --num_processes 4 -m nla.cli rl ...      # the same loop, the batch split over processes

One step:
  1. rollout  each activation of the batch gets `group_size` sampled explanations (temperature 1,
              a length cap), with each token's log-prob under the sampling distribution;
  2. reward   the current AR reads each explanation: reward = -MSE (or -log MSE) against the activation,
              minus an optional length penalty; untagged or truncated samples get the failure reward;
              advantage = (r - group mean) / (group std + 1e-6);
  3. update   AV: clipped importance-ratio loss (token-mean) + kl_coef x KL to the SFT AV (the same model
              with its LoRA adapters switched off: no second copy); AR: regression on the same rollouts,
              with its own optimizer, after the rewards were computed.

The policy is the SFT AV plus a fresh LoRA, the AR gets its own LoRA; at the end each is stacked with
the SFT adapter it trained on top of (OUT/av_adapter, OUT/ar_adapter; see rl/export.py), so NLA.load(OUT)
reads the result.
Files: OUT/rl_metrics.jsonl (one line per step, time split rollout/reward/update; held-out FVE every
`eval_every` steps), OUT/rl_samples.jsonl (a few explanations every `sample_every` steps),
OUT/rl_state/ (atomic: both adapters, both optimizers and schedulers, RNG states).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from nla.autoencoder.lora import add_lora
from nla.autoencoder.nla import NLA, ar_input_ids, reconstruct_texts
from nla.autoencoder.reconstructor import reconstruction_mse
from nla.autoencoder.verbalizer import FAILED_MSE, check_vectors
from nla.eval.evaluate import derangement, explanation_mse
from nla.eval.metrics import baseline, summary
from nla.inputs import open_dataset
from nla.models.activations import pad_right
from nla.models.adapters import adapter_for
from nla.models.loading import pad_id_of
from nla.rl import grpo
from nla.rl.config import RLConfig
from nla.rl.policy import Policy, padded_responses, response_logprobs, warmup_schedule
from nla.rl.rewards import ReconstructionReward, RewardFn, shaped_rewards
from nla.rl.rollout import HFRollouts, Rollout, RolloutBackend
from nla.train.av import av_batch
from nla.train.checkpoint import guarded_step
from nla.train.pairs import BatchOrder

STATE_DIR, METRICS_FILE, SAMPLES_FILE = "rl_state", "rl_metrics.jsonl", "rl_samples.jsonl"
SAMPLES_PER_LOG = 2  # activations (with their whole group) written to rl_samples.jsonl


def read_activations(path: Path, nla: NLA, what: str) -> torch.Tensor:
    """(N, d) activations of a dataset split, checked against the NLA's width, layer and target."""
    data = open_dataset(path, flag=what, expect="a split of an activation dataset (e.g. runs/acts/rl.parquet)",
                        against=f"the NLA {nla.source.label}", d_model=nla.d_model, layer=nla.layer,
                        target=nla.av_meta.base_checkpoint)
    return check_vectors(data.vectors(), nla.d_model)


class Trainer:
    """The state of one run: the policy, the AR and its optimizer, the data, the accelerator."""

    def __init__(self, cfg: RLConfig, reward: RewardFn | None, accelerator, backend: RolloutBackend | None = None):
        self.cfg, self.accelerator = cfg, accelerator
        torch.manual_seed(cfg.seed)  # the fresh adapters start the same on every process
        # Separate AV and AR models: both are trained, each with its own fresh adapter.
        self.nla = NLA.load(cfg.nla, av=cfg.nla_av, ar=cfg.nla_ar, device=str(accelerator.device), dtype=cfg.dtype,
                            shared_base=False)
        self.golds = read_activations(cfg.data, self.nla, "--data")
        self.eval_golds = read_activations(cfg.eval_data, self.nla, "--eval-data")[: cfg.eval_rows] \
            if cfg.eval_data else None
        self.train_baseline = baseline(self.golds)
        tokenizer = self.nla.verbalizer.tokenizer
        self.pad_id = pad_id_of(tokenizer)
        self.policy = Policy(self.nla.verbalizer, cfg)
        self._build_ar()
        self.policy.wrapped, self.policy.optimizer, self.ar_wrapped, self.ar_optimizer = accelerator.prepare(
            self.policy.verbalizer.model, self.policy.optimizer, self.nla.reconstructor, self.ar_optimizer)
        self.backend = backend or HFRollouts(self.policy.verbalizer.model, tokenizer.eos_token_id, self.pad_id)
        self.reward = reward or ReconstructionReward(self.reconstruct, cfg.reward)
        self.reward_is_mse = reward is None and cfg.reward == "mse" and cfg.length_penalty == 0
        # The activations of each step, the same on every process (each then takes its share).
        self.batches = BatchOrder(len(self.golds), cfg.batch_size, cfg.steps * cfg.batch_size / len(self.golds),
                                  np.random.default_rng(cfg.seed))

    def _build_ar(self) -> None:
        ar, cfg = self.nla.reconstructor, self.cfg
        ar.backbone.requires_grad_(False)
        if cfg.ar_lora_rank:
            ar.backbone = add_lora(ar.backbone, cfg.ar_lora_rank, layers=list(range(ar.layer + 1)))
        else:
            ar.backbone.requires_grad_(True)
        ar.head.requires_grad_(True)
        self.ar_params = [p for p in ar.parameters() if p.requires_grad]
        self.ar_optimizer = torch.optim.AdamW(self.ar_params, lr=cfg.ar_lr, weight_decay=0.0)
        self.ar_scheduler = warmup_schedule(self.ar_optimizer, cfg.warmup_steps)

    def parts(self) -> dict:
        return {"av": (self.policy.verbalizer.model, self.policy.optimizer, self.policy.scheduler),
                "ar": (self.nla.reconstructor, self.ar_optimizer, self.ar_scheduler)}

    def reconstruct(self, texts: list[str]) -> torch.Tensor:
        ar = self.nla.reconstructor
        ar.eval()
        return reconstruct_texts(ar, self.nla.ar_tokenizer, self.nla.ar_meta.prompt_templates["ar"], texts)

    # -- one step ------------------------------------------------------------------------------------

    def local_vectors(self, step: int) -> tuple[np.ndarray, torch.Tensor]:
        """This process's share of the step's activations, each repeated group_size times."""
        cfg, acc = self.cfg, self.accelerator
        rows = np.array(self.batches.rows_at(step)[acc.process_index :: acc.num_processes])
        return rows, self.golds[rows].repeat_interleave(cfg.group_size, dim=0)

    def step(self, step: int) -> tuple[dict, list[dict]]:
        cfg, acc = self.cfg, self.accelerator
        # Seeded by (seed, step, process): a resumed run samples exactly what an uninterrupted one would.
        torch.manual_seed(cfg.seed * 1_000_003 + step * 1_009 + acc.process_index)
        rows, vectors = self.local_vectors(step)
        clock = time.perf_counter()
        self.backend.sync(self.policy.verbalizer.model)
        _, embeds, mask = self.policy.verbalizer.prompt_embeddings(vectors)
        self.policy.verbalizer.model.eval()
        with self.policy.verbalizer.reading():
            rollout = self.backend.generate(embeds, mask, max_new_tokens=cfg.max_response_tokens,
                                            temperature=cfg.temperature)
        explanations = rollout.explanations(self.policy.verbalizer.tokenizer)
        rollout_seconds = time.perf_counter() - clock

        clock = time.perf_counter()
        rewards = torch.tensor(shaped_rewards(explanations, vectors, self.reward, failure_reward=cfg.failure_reward,
                                              length_penalty=cfg.length_penalty))
        advantages = grpo.group_advantages(rewards, cfg.group_size)
        reward_seconds = time.perf_counter() - clock

        clock = time.perf_counter()
        av_stats = self.update_policy(vectors, rollout, advantages)
        ar_stats = self.update_reconstructor(explanations, vectors)
        update_seconds = time.perf_counter() - clock

        failed = torch.tensor([float(e.failed) for e in explanations])
        # as nla eval counts them: a failure at FAILED_MSE, so the logged FVE and eval's agree
        mse = torch.tensor([FAILED_MSE if e.failed else -r for e, r in zip(explanations, rewards.tolist())])
        local = {"reward": rewards.mean(), "failure_rate": failed.mean(),
                 "length": torch.tensor([float(e.num_tokens) for e in explanations]).mean(),
                 **av_stats, **ar_stats}
        record = {k: float(acc.reduce(torch.as_tensor(v, dtype=torch.float32, device=acc.device), "mean"))
                  for k, v in local.items()}
        if self.reward_is_mse:  # -reward is the MSE: log the rollouts' FVE
            record["rollout_fve"] = 1.0 - float(mse.mean()) / self.train_baseline.denominator
        record.update(seconds_rollout=round(rollout_seconds, 3), seconds_reward=round(reward_seconds, 3),
                      seconds_update=round(update_seconds, 3))
        samples = [{"step": step + 1, "row": int(rows[i // cfg.group_size]), "reward": round(rewards[i].item(), 4),
                    "answer": explanations[i].answer}
                   for i in range(min(len(explanations), SAMPLES_PER_LOG * cfg.group_size))]
        return record, samples

    def update_policy(self, vectors: torch.Tensor, rollout: Rollout, advantages: torch.Tensor) -> dict:
        cfg, acc, policy = self.cfg, self.accelerator, self.policy
        verbalizer = policy.verbalizer
        ids, mask = padded_responses(rollout, self.pad_id, acc.device)  # (N, R)
        embeds, full_mask, _ = av_batch(verbalizer, vectors, rollout.token_ids, self.pad_id)
        verbalizer.model.train()
        with verbalizer.reading():
            logprobs = response_logprobs(policy.wrapped, embeds, full_mask, ids, cfg.temperature,
                                         verbalizer.shared_prefix)  # (N, R)
        rollout_logprobs = rollout.logprobs[:, : ids.shape[1]].to(acc.device)
        old, agreed = grpo.old_logprobs_from_rollout(rollout_logprobs, logprobs)
        per_token, clipped = grpo.clipped_policy_loss(logprobs, old, advantages.to(acc.device), cfg.clip)
        stats = {"logprob_mismatch_k3": grpo.logprob_mismatch(rollout_logprobs, logprobs, mask),
                 "rollout_logprobs_reused": float(grpo.masked_sum(agreed.float(), mask) / mask.sum()),
                 "clip_fraction": float(grpo.masked_sum(clipped.float(), mask) / mask.sum())}
        if cfg.kl_coef > 0:
            with verbalizer.reading():
                ref = policy.reference_logprobs(embeds, full_mask, ids)
            per_token = per_token + cfg.kl_coef * grpo.kl_penalty(logprobs, ref, cfg.kl_estimator)
            stats["kl_k1"] = float(grpo.masked_sum(grpo.kl_k1(logprobs.detach(), ref), mask) / mask.sum())
            stats["kl_k3"] = float(grpo.masked_sum(grpo.kl_k3(logprobs.detach(), ref), mask) / mask.sum())
        # Token-mean over the whole batch on all processes (DDP averages, so scale by the process count).
        tokens = acc.reduce(mask.sum().detach(), "sum")
        loss = grpo.masked_sum(per_token, mask) * acc.num_processes / tokens
        stats.update(self._optimizer_step(loss, policy.params, policy.optimizer, policy.scheduler, "av"))
        return stats

    def update_reconstructor(self, explanations, vectors: torch.Tensor) -> dict:
        """Regression of the AR on this step's successful rollouts (failed ones weigh 0, so every process
        runs the same collective ops even when all its samples failed)."""
        if not self.cfg.ar_lr:
            return {}
        acc, ar = self.accelerator, self.nla.reconstructor
        texts = [e.text if e.text is not None else e.answer for e in explanations]
        weight = torch.tensor([0.0 if e.failed else 1.0 for e in explanations], device=acc.device)
        rows = ar_input_ids(self.nla.ar_tokenizer, texts, self.nla.ar_meta.prompt_templates["ar"],
                            adapter_for(ar.backbone.config).requires_bos)
        ids, mask = pad_right(rows, self.pad_id, acc.device)
        ar.train()
        mse = reconstruction_mse(self.ar_wrapped(ids, mask), vectors.to(acc.device))  # (N,)
        count = acc.reduce(weight.sum(), "sum").clamp_min(1)
        loss = (mse * weight).sum() * acc.num_processes / count
        return self._optimizer_step(loss, self.ar_params, self.ar_optimizer, self.ar_scheduler, "ar")

    def _optimizer_step(self, loss, params, optimizer, scheduler, name: str) -> dict:
        grad_norm, finite = guarded_step(self.accelerator, loss, params, optimizer, scheduler, self.cfg.max_grad_norm)
        return {f"{name}_loss": float(loss.detach()), f"{name}_grad_norm": grad_norm,
                f"{name}_skipped": float(not finite)}

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self) -> dict:
        """Held-out FVE of greedy explanations, scored as `nla eval` scores them (a failed explanation counts
        MSE 2), next to the shuffled control: each explanation scored against another row's activation."""
        golds = self.eval_golds
        self.policy.verbalizer.model.eval()
        explanations = self.policy.verbalizer.explain(golds, max_new_tokens=self.cfg.max_response_tokens,
                                                      temperature=0.0)
        records = [{"text": e.text} for e in explanations]
        reference = baseline(golds)
        shuffled = derangement(len(golds), seed=0)
        return {"eval_fve": summary(explanation_mse(self.nla, records, golds, 32), reference)["fve"],
                "eval_fve_shuffled": summary(explanation_mse(self.nla, [records[i] for i in shuffled], golds, 32),
                                             reference)["fve"],
                "eval_length": float(np.mean([e.num_tokens for e in explanations])),
                "eval_failure_rate": float(np.mean([e.failed for e in explanations])),
                "eval_examples": [e.answer for e in explanations[:3]]}
