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
from nla.inputs import damaged_file

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
    """The step records of RUN/rl_metrics.jsonl. A last line without its newline is one being written by a
    run still in progress (or cut by a kill): it is left out; any other line that is not a step record means
    the file is damaged or foreign, and is named."""
    path = Path(run) / "rl_metrics.jsonl"
    if not path.is_file():
        raise NLAError(f"{path} not found; pass the --out folder of an `nla rl` run")
    with damaged_file(path, "a text file", "pass the --out folder of an `nla rl` run"):
        text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # still being written
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise NLAError(f"{path} line {number} is not a step record of `nla rl`; the file is damaged or "
                           "foreign: delete that line, or pass the --out folder of an `nla rl` run")
        records.append(record)
    if not records:
        raise NLAError(f"{path} holds no finished step yet; plot again once `nla rl` has logged a step")
    return records


def plot_run(run: str | Path) -> Path:
    """Write RUN/rl_curves.png; returns its path."""
    run = Path(run)
    records = read_metrics(run)  # first: a bad file is named even where matplotlib is missing
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise NLAError("plots need matplotlib; install it with pip install 'nla[plot]'") from err
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
