"""`nla rl`: GRPO training of the verbalizer (AV) against a live reconstructor (AR).

config.py   RLConfig, the stage's settings (validated)
rollout.py  the generation backend interface and its HF implementation
rewards.py  reward callables shared with evaluation
grpo.py     the pure pieces of the objective: advantages, clipped loss, KL estimators
trainer.py  the loop: rollout -> reward -> AV update -> AR update, resumable, on 1..N processes
plots.py    PNG curves from rl_metrics.jsonl (`nla plot RUN`)
"""
