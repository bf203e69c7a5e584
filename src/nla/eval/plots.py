"""PNG plots of evaluation figures (the `plot` extra: pip install 'nla[plot]').

Generic on purpose: a plot takes bucket labels and named series of numbers, so any stage
(eval, RL curves) can draw its own figures without new plotting code. matplotlib is
imported only inside the functions, with the non-interactive Agg backend, so the core
package never needs it.
"""

from __future__ import annotations

from pathlib import Path

from nla.atomic import atomic_path
from nla.errors import NLAError

INSTALL_HINT = "pip install 'nla[plot]'"


def require_matplotlib():
    """The pyplot module on the Agg backend, or an NLAError naming the install fix."""
    try:
        import matplotlib
    except ImportError as err:
        raise NLAError(f"plots need matplotlib, which is not installed; {INSTALL_HINT}") from err
    matplotlib.use("Agg")  # files only: never open a window, never need a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = require_matplotlib()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def bucket_plot(path: str | Path, labels: list[str], series: dict[str, list[float]], *, title: str, xlabel: str,
                ylabel: str, kind: str = "line") -> Path:
    """One value per bucket for each named series, as lines with markers (kind="line") or grouped bars ("bar")."""
    if kind not in ("line", "bar"):
        raise NLAError(f"unknown plot kind '{kind}'; use line or bar")
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.2))
    positions = list(range(len(labels)))
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        if kind == "line":
            ax.plot(positions, values, marker="o", label=name)
        else:
            ax.bar([p - 0.4 + width * (k + 0.5) for p in positions], values, width=width, label=name)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(positions, labels, rotation=20, ha="right")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))  # never over the data
    ax.grid(axis="y", alpha=0.3)
    path = Path(path)
    _save(fig, path)
    return path
