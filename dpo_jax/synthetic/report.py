"""The synthetic benchmark's outputs: headline figures, the comparison table, the frontier figure, and
the merge of a sweep's runs (one `synthetic_eval.json` per beta) into one table and one figure.

Works on the JSON-able evaluation record `experiment.evaluate_policies` builds, never on models, so a
sweep is summarised from its JSON files alone.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("dpo_jax")

EVAL_FILE = "synthetic_eval.json"
PLOT_FILE = "synthetic_frontier.png"
# Baselines in the order of the paper's figure, with the names the table and figure show.
BASELINE_LABELS = {"preferred_ft": "preferred-FT", "unlikelihood": "unlikelihood"}
# The RLHF baselines' series: name -> (label, the field that sets each point, its table cell).
RLHF_SERIES = {
    "ppo_true_reward": ("PPO (true reward)", "kl_coef", "{:.3f}"),
    "ppo_learned_reward": ("PPO (learned RM)", "kl_coef", "{:.3f}"),
    "best_of_n": ("best-of-N (learned RM)", "n", "N={}"),
}


def headline(result: dict, beta: float) -> dict:
    """The top-level fields of `synthetic_eval.json` for the run's main beta."""
    dpo = next(point for point in result["dpo_by_beta"] if point["beta"] == beta)
    optimum = next(point for point in result["optimum_by_beta"] if point["beta"] == beta)
    return {
        "beta": beta,
        "dpo": dpo,
        "optimum_at_same_kl": {"kl": dpo["kl"], "reward": dpo["optimum_reward"]},
        "gain_ratio": dpo["gain_ratio"],
        "optimum": optimum,  # pi*_beta itself: where DPO at this beta should end up
    }


def method_label(result: dict) -> str:
    """The benchmarked preference loss as the table and figure name it."""
    loss = result.get("loss", "dpo")
    return "DPO" if loss == "dpo" else loss


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _rows(result: dict) -> list[tuple[str, ...]]:
    reference = result["reference"]["reward"]
    rows = [("reference (SFT)", "-", _number(0.0), _number(reference), _number(reference), "-")]
    for optimum in result["optimum_by_beta"]:
        rows.append(
            (
                "optimum pi*",
                _number(optimum["beta"], 3),
                _number(optimum["kl"]),
                _number(optimum["reward"]),
                _number(optimum["reward"]),
                _number(1.0),
            )
        )
    for point in result["dpo_by_beta"]:
        rows.append((method_label(result), _number(point["beta"]), *_point_cells(point)))
    for name, label in BASELINE_LABELS.items():
        if name in result:
            rows.append((label, "-", *_point_cells(result[name])))
    for name, (label, key, column) in RLHF_SERIES.items():
        for point in result.get(name, []):
            rows.append((label, column.format(point[key]), *_point_cells(point)))
    if "generator" in result:
        rows.append(("generator (SFT data)", "-", *_point_cells(result["generator"])))
    return rows


def _point_cells(point: dict) -> tuple[str, ...]:
    return (
        _number(point["kl"]),
        _number(point["reward"]),
        _number(point.get("optimum_reward")),
        _number(point.get("gain_ratio")),
    )


def format_table(result: dict) -> str:
    """Method, beta, KL(pi || pi_ref), E[r], the optimum's E[r] at that KL and the gain ratio, all exact."""
    header = ("method", "beta / N", "KL", "E[r]", "optimum E[r] at KL", "gain ratio")
    rows = [header, *_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    notes = [
        f"exact over {result.get('num_eval_prompts', '?')} held-out prompts; "
        f"E[max_y r] = {_number(result.get('reward_maximum'))}; "
        "gain ratio = (E[r] - E_ref[r]) / (optimum E[r] at the same KL - E_ref[r])"
    ]
    if "reward_model" in result:
        accuracy = result["reward_model"]
        notes.append(
            f"reward model: eval pair accuracy {_number(accuracy['eval_pair_accuracy'])} "
            f"(the true reward on the same noisy labels: {_number(accuracy['true_reward_pair_accuracy'])}); "
            "PPO's beta column is its KL coefficient"
        )
    return "\n".join(lines + notes)


def plot(result: dict, path: str | Path) -> Path | None:
    """The exact frontier and every method's point; None (with a warning) without matplotlib."""
    try:
        import matplotlib  # noqa: F401  (plot_frontier imports it lazily: fail here, not half-way)

        from dpo_jax.synthetic.plot import plot_frontier
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install dpo_jax[plot])", path)
        return None
    points = {
        method_label(result): [(p["kl"], p["reward"]) for p in result["dpo_by_beta"]],
        **{
            label: [(result[n]["kl"], result[n]["reward"])]
            for n, label in BASELINE_LABELS.items()
            if n in result
        },
        **{
            label: [(p["kl"], p["reward"]) for p in result[name]]
            for name, (label, _, _) in RLHF_SERIES.items()
            if result.get(name)
        },
        "reference (SFT)": [(0.0, result["reference"]["reward"])],
        **(
            {"generator (SFT data)": [(result["generator"]["kl"], result["generator"]["reward"])]}
            if "generator" in result
            else {}
        ),
    }
    optima = [(p["kl"], p["reward"]) for p in result["optimum_by_beta"]]
    betas = ", ".join(f"{p['beta']:g}" for p in result["dpo_by_beta"])
    title = f"synthetic task, {method_label(result)} at beta = {betas}"
    # The frontier starts at pi_ref itself (beta -> infinity).
    line = [{"kl": 0.0, "reward": result["reference"]["reward"]}, *result["frontier"]]
    return plot_frontier(line, points, path, title=title, optimum_points=optima)


def read_sweep(root: str | Path) -> list[dict]:
    """Every `beta_*/synthetic_eval.json` under `root`, sorted by beta."""
    files = sorted(Path(root).glob(f"beta_*/{EVAL_FILE}"))
    if not files:
        raise FileNotFoundError(f"no beta_*/{EVAL_FILE} under {root}")
    return sorted((json.loads(f.read_text()) for f in files), key=lambda r: r["beta"])


def merge_sweep(results: Sequence[dict]) -> dict:
    """One record with every run's DPO points, against the first run's reference and frontier.

    Runs of a sweep that share `synthetic.reference_workdir` share pi_ref, hence the frontier and the
    baselines. Runs with their own pi_ref each have their own frontier: the gain ratios in the table
    stay exact (each is against its own), but the figure shows only the first run's frontier.
    """
    first = results[0]
    if any(r["reference"]["reward"] != first["reference"]["reward"] for r in results):
        logger.warning(
            "the runs have different references (no shared synthetic.reference_workdir): the figure "
            "draws the first run's frontier and baselines only"
        )
    merged = {key: value for key, value in first.items() if key not in ("dpo_by_beta", "optimum_by_beta")}
    for key in ("dpo_by_beta", "optimum_by_beta"):
        merged[key] = sorted((p for r in results for p in r[key]), key=lambda p: p["beta"])
    return merged


def summarise_sweep(root: str | Path, plot_path: str | Path | None = None) -> tuple[str, Path | None]:
    """(table of every beta's run under `root`, the merged figure drawn to `plot_path`, or None)."""
    merged = merge_sweep(read_sweep(root))
    drawn = plot(merged, plot_path) if plot_path is not None else None
    return format_table(merged), drawn
