"""A recipe's figure and table: our points, then the paper's reported results in rows of their own.

Writes OUT/table.md (Markdown), OUT/table.json (the same rows, machine-readable) and OUT/figure.png.
Our rows carry the label "ours (scale, models)", the paper's "paper": the two are never in one row,
one curve or one average.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_jax.recipes.base import Report
from dpo_jax.recipes.paper import PAPER


def _number(value, stderr=None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if stderr is None else f"{value:.4f} ± {stderr:.4f}"


def frontier_table(points, out_dir: Path, *, title, ours_label, claims, missing, notes=()) -> Report:
    """Points {method, parameter (its value), sweep (its name: "beta", "N", ...), kl, kl_stderr, kl_kind,
    reward, reward_stderr, stage} -> figure and table. A point's KL is sampled unless its kl_kind says
    "analytic_bound" (Best-of-N), as the table says beside the number."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "source": ours_label,
            "method": p["method"],
            "parameter": p["parameter"],
            "kl": p["kl"],
            "kl_stderr": p["kl_stderr"],
            "kl_kind": p.get("kl_kind", "sampled"),  # Best-of-N: "analytic_bound" (log N - (N-1)/N)
            "reward": p["reward"],
            "reward_stderr": p["reward_stderr"],
            "run": p["stage"],
            "step": p.get("step"),
        }
        for p in points
    ]
    lines = [
        f"# {title}",
        "",
        f"## {ours_label}",
        "",
        "| method | parameter | step | KL (nats, sampled) | reward | run |",
        "|---|---|---|---|---|---|",
    ]
    for row, point in sorted(zip(rows, points), key=lambda rp: (rp[0]["method"], rp[0]["run"], rp[1].get("step") or 0)):
        parameter = "-" if row["parameter"] is None else f"{row['parameter']:g}"
        kl = _number(row["kl"], row["kl_stderr"])
        if row["kl_kind"] == "analytic_bound":
            kl = f"{_number(row['kl'])} (analytic bound)"
        step = "export" if point.get("step") is None else point["step"]
        lines.append(
            f"| {row['method']} | {parameter} | {step} | {kl} | "
            f"{_number(row['reward'], row['reward_stderr'])} | {row['run']} |"
        )
    lines += ["", "± is one standard error (prompts as clusters)."]
    if notes:
        lines += ["", "## Settings and their sources", "", *(f"- {note}" for note in notes)]
    lines += paper_section(claims)
    if missing:
        lines += ["", "## Not on this figure yet", "", *(f"- {gap}" for gap in missing)]
    (out_dir / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    paper_rows = [{"source": PAPER, "what": w, "setting": s, "value": v} for w, s, v in claims]
    (out_dir / "table.json").write_text(
        json.dumps({"ours": rows, "paper": paper_rows}, indent=1), encoding="utf-8"
    )
    curves: dict[str, list] = {}
    for p in points:
        # The plot writes "<sweep>=<value>" beside a point: the frontier's name of the swept setting.
        sweep = {"parameter": p.get("sweep"), "value": p["parameter"]}
        curves.setdefault(p["method"], []).append({**p, **sweep})
    figure = _figure(curves, out_dir / "figure.png", title=f"{title}\n{ours_label}")
    return Report(figure, str(out_dir / "table.md"), sorted(curves))


def paper_section(claims) -> list[str]:
    lines = [
        "",
        f"## {PAPER}: reported, not reproduced here",
        "",
        "| what | setting | value |",
        "|---|---|---|",
    ]
    return lines + [f"| {w} | {s} | {v} |" for w, s, v in claims]


def _figure(curves, path: Path, *, title: str) -> str | None:
    from dpo_jax.analysis.plots import MissingMatplotlib, plot_reward_vs_kl

    try:
        return str(plot_reward_vs_kl(curves, path, title=title))
    except MissingMatplotlib as error:
        print(f"no figure: {error}")
        return None
