"""Figures of the paper's evaluations: win rate vs sampling temperature, and reward vs KL.

Drawn on a bare Agg canvas, never through pyplot, so no display is needed and the process-wide backend
is left alone. matplotlib is the optional `plot` extra; without it the figures are skipped by the
commands with a message (the JSON results are written regardless).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from dpo_jax.config.runtime import writes_outputs

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


class MissingMatplotlib(ImportError):
    pass


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingMatplotlib("plots need matplotlib: pip install 'dpo_jax[plot]'") from error
    figure = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure, axes, path) -> Path:
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    if not writes_outputs():  # process 0 writes (analysis/results.py)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    figure.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def plot_win_rates(runs: Mapping[str, Sequence[Mapping[str, float]]], path, *, title: str = "") -> Path:
    """One line per run through its per-temperature dicts (temperature, win_rate, ci_low, ci_high),
    with the 95% bootstrap intervals as error bars."""
    figure, axes = _figure()
    for index, (label, points) in enumerate(runs.items()):
        points = sorted(points, key=lambda p: p["temperature"])
        temps = [p["temperature"] for p in points]
        rates = [p["win_rate"] for p in points]
        errors = [
            [r - p["ci_low"] for r, p in zip(rates, points)],
            [p["ci_high"] - r for r, p in zip(rates, points)],
        ]
        axes.errorbar(
            temps, rates, yerr=errors, marker=_MARKERS[index % len(_MARKERS)], capsize=3, label=label
        )
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("sampling temperature")
    axes.set_ylabel("win rate")
    axes.set_ylim(0.0, 1.0)
    if title:
        axes.set_title(title)
    return _save(figure, axes, path)


def plot_win_rate_over_training(
    runs: Mapping[str, Sequence[Mapping[str, float]]], path, *, title: str = ""
) -> Path:
    """Win rate against training step: one line per run and temperature through its per-checkpoint
    summaries (step, temperature, win_rate, ci_low, ci_high), as the paper's HH plot over fine-tuning."""
    figure, axes = _figure()
    index = 0
    for label, points in runs.items():
        points = [p for p in points if "win_rate" in p]  # a checkpoint that did not read has no rate
        for temperature in sorted({p["temperature"] for p in points}):
            line = sorted((p for p in points if p["temperature"] == temperature), key=lambda p: p["step"])
            rates = [p["win_rate"] for p in line]
            errors = [
                [r - p["ci_low"] for r, p in zip(rates, line)],
                [p["ci_high"] - r for r, p in zip(rates, line)],
            ]
            axes.errorbar(
                [p["step"] for p in line],
                rates,
                yerr=errors,
                marker=_MARKERS[index % len(_MARKERS)],
                capsize=3,
                label=f"{label}, T={temperature:g}",
            )
            index += 1
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("training step")
    axes.set_ylabel("win rate")
    axes.set_ylim(0.0, 1.0)
    if title:
        axes.set_title(title)
    return _save(figure, axes, path)


def plot_reward_vs_kl(curves: Mapping[str, Sequence[Mapping[str, float]]], path, *, title: str = "") -> Path:
    """One curve per method through its points (kl, kl_stderr, reward, reward_stderr, and the method's
    sweep `parameter` and `value`), ordered by KL, with standard-error bars and each point's sweep
    value written beside it ("beta=0.1", "kl_coef=0.05", "alpha=1", "N=4"). A point whose "kl_kind" is
    "analytic_bound" (Best-of-N) has its KL computed, not sampled: the axis label says so."""
    figure, axes = _figure()
    for index, (method, points) in enumerate(curves.items()):
        points = sorted(points, key=lambda p: p["kl"])
        axes.errorbar(
            [p["kl"] for p in points],
            [p["reward"] for p in points],
            xerr=[p["kl_stderr"] for p in points],
            yerr=[p["reward_stderr"] for p in points],
            marker=_MARKERS[index % len(_MARKERS)],
            capsize=2,
            label=method,
        )
        # One label per run (its last point), offset in turn so that neighbouring labels do not overlap.
        last = {}
        for p in points:
            if p.get("parameter") is not None:
                key = (p.get("run"), p["value"])
                if key not in last or (p.get("step") or 0) >= (last[key].get("step") or 0):
                    last[key] = p
        for number, p in enumerate(sorted(last.values(), key=lambda p: p["kl"])):
            axes.annotate(
                f"{p['parameter']}={p['value']:g}",
                (p["kl"], p["reward"]),
                fontsize="x-small",
                xytext=(4, 4 + 8 * (number % 3)),
                textcoords="offset points",
            )
    analytic = any(p.get("kl_kind") == "analytic_bound" for points in curves.values() for p in points)
    kind = "sampled; Best-of-N: the analytic bound" if analytic else "sampled"
    axes.set_xlabel(rf"KL($\pi\,\|\,\pi_{{\mathrm{{ref}}}}$) (nats, {kind})")
    axes.set_ylabel("reward (classifier p(positive))")
    if title:
        axes.set_title(title)
    figure.text(0.01, 0.005, "error bars: one standard error (prompts as clusters)", fontsize="x-small")
    return _save(figure, axes, path)
