"""The reward-vs-KL figure of the paper's controlled experiment, for the synthetic task.

Owns `plot_frontier`: the exact optimum as a line, each training method's (KL, reward) points as
markers. It draws on a bare Agg canvas, never through pyplot, so it neither needs a display nor
changes the process-wide matplotlib backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_frontier(
    frontier_points: Sequence[Mapping[str, float]],
    method_points: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    title: str | None = None,
    optimum_points: Sequence[tuple[float, float]] = (),
) -> Path:
    """Writes a PNG of the frontier (dicts with "kl" and "reward", e.g. `frontier(...)`) and the
    methods' (kl, reward) points to `path`; returns the path. `optimum_points` are the exact optima
    pi*_beta at the runs' betas (on the line): the points the methods aim at, ringed so they show."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    line = sorted((point["kl"], point["reward"]) for point in frontier_points)
    if line:
        kls, rewards = zip(*line)
        axes.plot(kls, rewards, color="black", linewidth=1.5, label="optimum (exact)")
    if optimum_points:
        kls, rewards = zip(*optimum_points)
        axes.scatter(
            kls,
            rewards,
            s=90,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            zorder=3,
            label=r"$\pi^*_\beta$ at the run's $\beta$ (exact)",
        )
    for index, (name, points) in enumerate(method_points.items()):
        if not points:
            continue
        kls, rewards = zip(*points)
        axes.scatter(kls, rewards, marker=_MARKERS[index % len(_MARKERS)], s=28, alpha=0.85, label=name)
    axes.set_xlabel(r"KL($\pi\,\|\,\pi_{\mathrm{ref}}$)")
    axes.set_ylabel(r"E[$r$]")
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
