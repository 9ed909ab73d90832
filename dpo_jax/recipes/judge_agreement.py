"""The `judge_agreement` recipe: the paper's judge-vs-human table (Table 2), with its protocol.

    python -m dpo_jax.experiment --recipe=judge_agreement --scale=tiny --workdir=/tmp/tldr-recipe \\
        [--recipe.labels=human_labels.jsonl] [--recipe.judge_templates=S.txt,C.txt]

The comparison set: TL;DR samples of DPO, SFT and PPO-1 (each sampled at its temperature in
`method_temperatures`), each against a summary of PPO sampled at temperature 0 (`--baseline_temperature`)
for the same post; one prompt set for all three. Judged by the judge under two templates, (S) and (C)
(`judge_templates`: files; default the built-in summarization template and configs/prompts/
judge_concise.txt, our own wording: the paper's prompts are the user's to supply); each method's win
rate under (S) and under (C), and their agreement on the same comparisons. With `labels` (the paper's
human labels are not public: a JSONL label file of human judgements of these comparisons, each row
{prompt, response_a (the method), response_b (PPO at 0), label, rater}), the humans' agreement with (S),
with (C), and with each other. Agreement = the fraction of comparisons where two judges pick the same
response. The judge's agreement with the comparison data's own preference labels stays, in rows of its
own named for what it is (`winrate --check_judge`).
Its training stages are the tldr recipe's (the same commands): in the tldr recipe's DIR they are reused.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_jax.recipes import rehearsal, tldr, win_rates
from dpo_jax.recipes.base import Recipe, Report, command_stage
from dpo_jax.recipes.paper import PAPER_CLAIMS
from dpo_jax.recipes.stages import name_with, read_output, winrate_stage
from dpo_jax.recipes.table import paper_section

FIGURE = "Table 2: judge vs human agreement"
SOURCES = {
    "method_temperatures": "(check) paper Table 2: DPO and SFT at 0.25, PPO-1 at temperature 1",
    "baseline_temperature": "paper Table 2: every method against PPO at temperature 0",
    "judge_templates": "paper Table 2: GPT-4 with two prompts, (S) plain and (C) concise; ours by default",
}


def config(scale: str):
    c = tldr.config(scale)
    c.labels = ""  # a label file of human judgements of the comparison set (JSONL)
    c.judge_templates = ""  # "S,C" template files; "" = the built-in one and configs/prompts/judge_concise.txt
    c.method_temperatures = (0.25, 0.25, 1.0)  # DPO, SFT, PPO-1
    c.baseline_temperature = 0.0
    return c


def _templates(c) -> tuple[str, str]:
    if c.judge_templates:
        names = tuple(t for t in c.judge_templates.split(",") if t)
        if len(names) != 2:
            raise ValueError(f"recipe.judge_templates={c.judge_templates!r}: expected two files, S,C")
        return names
    return "", str(win_rates.PROMPTS_DIR / "judge_concise.txt")


def methods(c) -> dict[str, tuple[str, float]]:
    """label -> (policy run, its sampling temperature)."""
    if len(c.method_temperatures) != 3:
        raise ValueError(f"recipe.method_temperatures={c.method_temperatures}: expected three, DPO,SFT,PPO")
    dpo = name_with("dpo_beta", c.betas[0])
    labels = (dpo, "sft", "ppo")
    return {label: (f"{{root}}/{label}", float(t)) for label, t in zip(labels, c.method_temperatures)}


def _judge(c, stage: str, template: str) -> dict:
    flags = win_rates.judge_flags(c, stage)
    if c.judge == "openai" and template:
        flags["judge_template"] = template
    return flags


def stages(c) -> list:
    out = [rehearsal.data_stage(c)] if c.rehearse else []
    out += win_rates.training_stages(c, ("sft", "dpo", "ppo", "reward_model"))
    s_template, c_template = _templates(c)
    judged = []
    for label, (policy, temperature) in methods(c).items():
        stage = f"table2_{label}"
        flags = {
            **win_rates.sampling_flags(c, (temperature,)),
            "baseline": "{root}/ppo",
            "baseline_temperature": c.baseline_temperature,
            **_judge(c, stage, s_template),
        }
        out.append(
            winrate_stage(
                stage,
                policy,
                flags,
                after=(label, "ppo", *win_rates.judge_after(c)),
                extra=c.args.winrate,
                plan=win_rates.judge_calls(c, 2, (temperature,)),
            )
        )
        judge_c = f"{stage}_judge_c"
        flags = {
            "labels": out[-1].outputs["labels"],
            "task": "tldr",
            "seed": c.seed,
            "out": f"{{root}}/{judge_c}/labels.jsonl",
            "summary_out": f"{{root}}/{judge_c}/agreement.json",
        }
        flags.update({k: v for k, v in _judge(c, judge_c, c_template).items()})
        out.append(
            command_stage(
                judge_c,
                "dpo_jax.judge_agreement",
                flags,
                after=(stage, *win_rates.judge_after(c)),
                kind="score",
                outputs={"labels": flags["out"], "agreement": flags["summary_out"]},
                plan={"judge_calls": f"{c.num_prompts} (template C)"},
            )
        )
        judged += [out[-2].outputs["labels"], out[-1].outputs["labels"]]
    if c.labels:  # the humans against (S) and (C), and against each other
        out.append(
            command_stage(
                "table2_humans",
                "dpo_jax.judge_agreement",
                {"labels": c.labels, "against": ",".join(judged), "seed": c.seed,
                 "summary_out": "{root}/table2_humans/agreement.json"},
                after=tuple(s.name for s in out if s.name.startswith("table2_")),
                inputs=(c.labels,),
                kind="score",
                outputs={"agreement": "{root}/table2_humans/agreement.json"},
            )
        )
    flags = {
        "task": "tldr",
        "num_prompts": c.num_prompts,
        "prompt_seed": c.seed,
        "seed": c.seed,
        **win_rates.judge_flags(c, "judge_vs_dataset_labels"),
    }
    out.append(
        winrate_stage(
            "judge_vs_dataset_labels",
            "{root}/reward_model",
            flags,
            after=("reward_model",),
            extra="--check_judge " + c.args.winrate,
            plan={"judge_calls": str(c.num_prompts)},
        )
    )
    return out


def missing(c) -> list[str]:
    if c.labels:
        return []
    return ["the paper's human labels are not public: --recipe.labels=FILE adds the humans' rows (label the "
            "comparisons in DIR/<method>/winrate/table2_*.labels.jsonl)"]


def _rate(record: dict) -> float:
    """An agreement record's rate; nan where no pair of labels was comparable (written as null)."""
    value = record.get("agreement")
    return float("nan") if value is None else float(value)


def _win_rate(labels: list[dict]) -> tuple[float, int]:
    decided = [r["label"] for r in labels if r["label"] in ("A", "B")]
    return (sum(x == "A" for x in decided) / len(decided) if decided else float("nan")), len(decided)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def report(c, root: Path) -> Report:
    all_stages = {s.name: s for s in stages(c)}
    expand = lambda path: Path(path.replace("{root}", str(root)))
    judge = "our tiny reward model (a stand-in)" if c.judge == "reward_model" else c.judge_model or "openai"
    rows = []
    for label, (_, temperature) in methods(c).items():
        s_stage, c_stage = all_stages[f"table2_{label}"], all_stages[f"table2_{label}_judge_c"]
        s_rate, n = _win_rate(_read_jsonl(expand(s_stage.outputs["labels"])))
        c_rate, _ = _win_rate(_read_jsonl(expand(c_stage.outputs["labels"])))
        agreement = read_output(root, c_stage, "agreement")["agreements"][-1]  # (S) and (C): one row each
        result = read_output(root, s_stage, "result")
        rows.append((label, temperature, n, s_rate, c_rate, _rate(agreement), result.get("prompt_set")))
    out = root / "report" / "judge_agreement"
    out.mkdir(parents=True, exist_ok=True)
    scale = f"{c.scale}, rehearsal" if c.rehearse else c.scale
    lines = [
        f"# {FIGURE}",
        "",
        f"## ours ({scale}; judge: {judge}; each method against PPO at temperature {c.baseline_temperature:g})",
        "",
        "| method | temperature | comparisons | judge (S) win % | judge (C) win % | (S)-(C) agreement | prompt set |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {m} | {t:g} | {n} | {100 * s:.0f} | {100 * cw:.0f} | {100 * a:.0f} | {p} |"
        for m, t, n, s, cw, a, p in rows
    ]
    if c.labels:
        lines += ["", "## humans (--recipe.labels)", "", "| between | agreement | pairs |", "|---|---|---|"]
        for record in read_output(root, all_stages["table2_humans"], "agreement")["agreements"]:
            rate = _rate(record)  # no pair of labels in common: no rate (nan), "-" in the table
            lines.append(f"| {record['between']} | {'-' if rate != rate else f'{rate:.3f}'} | {record['n']} |")
    dataset = read_output(root, all_stages["judge_vs_dataset_labels"], "result")
    lines += [
        "",
        "## the judge against the comparison data's own preference labels (not Table 2's quantity)",
        "",
        "| comparisons | agreement with the dataset's labels | 95% interval |",
        "|---|---|---|",
        f"| {dataset.get('n')} | {dataset['agreement_with_dataset_labels']:.3f} | "
        f"{dataset.get('ci_low', float('nan')):.3f}-{dataset.get('ci_high', float('nan')):.3f} |",
    ]
    notes = win_rates.sources_notes(c, SOURCES)
    if c.rehearsal:
        notes.append(f"rehearsal caps: {c.rehearsal}")
    lines += ["", "## Settings and their sources", "", *(f"- {n}" for n in notes)]
    lines += paper_section(PAPER_CLAIMS["judge_agreement"])
    if missing(c):
        lines += ["", "## Not in this table yet", "", *(f"- {g}" for g in missing(c))]
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Report(None, str(out / "table.md"), [r[0] for r in rows])


RECIPE = Recipe(
    "judge_agreement", FIGURE, config, stages, report, missing, rehearsal=win_rates.REHEARSAL,
    sources=lambda c: SOURCES,
)
