"""The gain-vs-pairs sweep's table (Markdown) and figure, from the JSON its steps wrote (sweep.py).

Figure: the gain ratio (left) and KL(pi || pi_ref) (right) against the number of pairs, log scale,
one line per beta for DPO on the held-out prompts, the tabular control on its pair prompts, the
population control as a marker at the right edge, and the optimum's KL as a dashed line per beta.
"""

from __future__ import annotations

import math
from pathlib import Path


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _default_runs(evaluation: dict, beta: float) -> list[dict]:
    runs = [r for r in evaluation["runs"] if r["beta"] == beta and not r["variant"]]
    return sorted(runs, key=lambda r: r["pairs_per_prompt"])


def _optimum(evaluation: dict, beta: float) -> dict:
    return next(o for o in evaluation["optimum"] if o["beta"] == beta)


def format_table(evaluation: dict, controls: list[dict]) -> str:
    lines = [
        "# Synthetic task: DPO's gain ratio against the number of pairs, and the controls",
        "",
        f"Exact statistics: `eval` over {evaluation['num_eval_prompts']} held-out prompts, `train` over the "
        f"first {evaluation['train_eval_prompts']} pair prompts (where the tabular control lives). "
        "gain ratio = (E_pi[r] - E_ref[r]) / (optimum E[r] at the policy's KL - E_ref[r]).",
        "",
        "## DPO (tiny GPT-2) against the number of pairs",
        "",
        "| beta | pairs/prompt | pairs | steps | lr | batch | variant | KL (eval) | optimum KL | "
        "gain ratio (eval) | gain ratio (train) | stage |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(
        evaluation["runs"], key=lambda r: (r["beta"], r["variant"] != "", r["pairs_per_prompt"])
    ):
        optimum = _optimum(evaluation, run["beta"])
        lines.append(
            f"| {run['beta']:g} | {run['pairs_per_prompt']} | {run['num_pairs']} | {run['num_train_steps']} | "
            f"{run['learning_rate']:g} | {run['global_batch_size']} | {run['variant'] or 'default'} | "
            f"{_cell(run['eval']['kl'])} | {_cell(optimum['eval']['kl'])} | "
            f"{_cell(run['eval']['gain_ratio'])} | {_cell(run['train']['gain_ratio'])} | {run['stage']} |"
        )
    lines += [
        "",
        "## Controls (tabular policy, one logit per prompt x completion, on the train prompts)",
        "",
        "| beta | control | pairs/prompt | KL | optimum KL | gain ratio | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for control in sorted(controls, key=lambda c: c["beta"]):
        beta = control["beta"]
        optimum_kl = _optimum(evaluation, beta)["train"]["kl"] if _has_optimum(evaluation, beta) else None
        for tab in control["tabular"]:
            final, best = tab["final"], tab["best"]
            lines.append(
                f"| {beta:g} | tabular, same pairs and loss | {tab['pairs_per_prompt']} | {_cell(final['kl'])} | "
                f"{_cell(optimum_kl)} | {_cell(final['gain_ratio'])} | after {final['step']} steps; best "
                f"{_cell(best['gain_ratio'])} at step {best['step']} (KL {_cell(best['kl'])}) |"
            )
        pop = control["population"]
        lines.append(
            f"| {beta:g} | tabular, population loss | infinite | {_cell(pop['kl'])} | {_cell(pop['optimum_kl'])} | "
            f"{_cell(pop['gain_ratio'], 6)} | {pop['prompts']} prompts, {pop['iterations']} Newton iterations, "
            f"max abs log(pi / pi*) {pop['max_abs_log_ratio_to_optimum']:.1e} |"
        )
    for departure in evaluation["departure"]:
        lines += [
            "",
            f"## Where {departure['stage']} departs from pi* (eval prompts), by pi_ref(y|x)",
            "",
            "| pi_ref(y|x) in | cells | pi_ref mass | pi mass | pi* mass | mean log(pi/pi*) | "
            "pi-weighted log(pi/pi*) | KL share (pi) | KL share (pi*) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for b in departure["bins"]:
            lines.append(
                f"| [{b['ref_prob_low']:g}, {b['ref_prob_high']:g}) | {b['cells']} | {_cell(b['ref_mass'])} | "
                f"{_cell(b['policy_mass'])} | {_cell(b['optimum_mass'])} | {_cell(b['mean_departure'])} | "
                f"{_cell(b['policy_weighted_departure'])} | {_cell(b['policy_kl_share'])} | "
                f"{_cell(b['optimum_kl_share'])} |"
            )
    return "\n".join(lines) + "\n"


def _has_optimum(evaluation: dict, beta: float) -> bool:
    return any(o["beta"] == beta for o in evaluation["optimum"])


def plot(evaluation: dict, controls: list[dict], path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.0, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    gain_axes, kl_axes = figure.subplots(1, 2)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    betas = sorted({r["beta"] for r in evaluation["runs"]})
    for index, beta in enumerate(betas):
        colour = colours[index % len(colours)]
        runs = _default_runs(evaluation, beta)
        pairs = [r["num_pairs"] for r in runs]
        gain_axes.plot(
            pairs, [r["eval"]["gain_ratio"] for r in runs], "o-", color=colour, label=f"DPO, beta {beta:g}"
        )
        kl_axes.plot(pairs, [r["eval"]["kl"] for r in runs], "o-", color=colour, label=f"DPO, beta {beta:g}")
        kl_axes.axhline(
            _optimum(evaluation, beta)["eval"]["kl"],
            color=colour,
            linestyle="--",
            linewidth=1,
            label=f"pi* KL, beta {beta:g}",
        )
        variants = [r for r in evaluation["runs"] if r["beta"] == beta and r["variant"]]
        for run in variants:
            gain_axes.scatter([run["num_pairs"]], [run["eval"]["gain_ratio"]], marker="x", color=colour)
            gain_axes.annotate(run["variant"], (run["num_pairs"], run["eval"]["gain_ratio"]), fontsize=6)
        control = next((c for c in controls if c["beta"] == beta), None)
        if control:
            tab = sorted(control["tabular"], key=lambda t: t["num_pairs"])
            # The tabular control sees only its prompts' share of each pair set: plot it at the same
            # pairs per prompt, i.e. at the pair set's size.
            gain_axes.plot(
                [t["num_pairs"] for t in tab],
                [t["final"]["gain_ratio"] for t in tab],
                "s:",
                color=colour,
                label=f"tabular control, beta {beta:g}",
            )
            right = max(pairs + [t["num_pairs"] for t in tab]) * 2
            gain_axes.scatter(
                [right],
                [control["population"]["gain_ratio"]],
                marker="*",
                s=120,
                color=colour,
                label=f"population loss (tabular), beta {beta:g}",
            )
    for axes, label in ((gain_axes, "gain ratio (held-out prompts)"), (kl_axes, r"KL($\pi\,\|\,\pi_{ref}$)")):
        axes.set_xscale("log")
        axes.set_xlabel("preference pairs")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    gain_axes.set_title("gain ratio vs pairs (x: optimisation variants)")
    kl_axes.set_title("KL vs pairs (dashed: the optimum's)")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
