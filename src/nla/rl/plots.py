"""PNG curves of an RL run from OUT/rl_metrics.jsonl: `nla plot RUN` writes RUN/rl_curves.png.

Panels: held-out FVE (with the shuffled control) and rollout FVE, reward, KL to the SFT AV,
explanation length, and failure rate, each against the step. matplotlib is an optional extra
(`pip install 'nla[plot]'`), imported only here.
"""

from __future__ import annotations

import json
from pathlib import Path

from nla.atomic import atomic_path
from nla.errors import NLAError

CURVES_FILE = "rl_curves.png"
# (panel title, [(metric key, label)])
PANELS = [
    ("FVE", [("eval_fve", "held-out"), ("eval_fve_shuffled", "held-out, shuffled control"),
             ("rollout_fve", "rollouts")]),
    ("reward", [("reward", "mean reward")]),
    ("KL to the SFT AV", [("kl_k3", "k3"), ("kl_k1", "k1")]),
    ("explanation length (tokens)", [("length", "rollouts"), ("eval_length", "held-out, greedy")]),
    ("failure rate", [("failure_rate", "rollouts"), ("eval_failure_rate", "held-out, greedy")]),
    ("seconds per step", [("seconds_rollout", "rollout"), ("seconds_reward", "reward"),
                          ("seconds_update", "update")]),
]


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / "rl_metrics.jsonl"
    if not path.exists():
        raise NLAError(f"{path} not found; pass the --out folder of an `nla rl` run")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run: str | Path) -> Path:
    """Write RUN/rl_curves.png; returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise NLAError("plots need matplotlib; install it with pip install 'nla[plot]'") from err
    run = Path(run)
    records = read_metrics(run)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for ax, (title, series) in zip(axes.flat, PANELS):
        for key, label in series:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) < 20 else None, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"nla rl: {run}")
    with atomic_path(run / CURVES_FILE) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return run / CURVES_FILE
