"""The win-rate recipes: `tldr`, `hh`, `news` and `judge_agreement` (the paper's Figures 2 right and 3,
its out-of-distribution table and its judge-vs-human table).

    python -m dpo_jax.experiment --recipe=tldr --scale=tiny --workdir=/tmp/tldr-recipe
    python -m dpo_jax.experiment --recipe=tldr --scale=paper --workdir=/tmp/tldr --dry_run

tldr: SFT -> reward model -> DPO over `betas` (0.5, as the paper's TL;DR runs) -> PPO -> Best of N
(N = 128) -> win rates against the baseline at `temperatures` (0, 0.25, 0.5, 0.75, 1).
hh: SFT = preferred-FT on the chosen responses -> reward model (for Best of N) -> DPO (beta 0.1) ->
Best of N -> win rates against the chosen responses.
news: the tldr policies on CNN/DailyMail articles: a plan until the cnn_dailymail source lands.
judge_agreement: the judge against the data's human labels (`winrate --check_judge`).

The judge: at --scale=paper the OpenAI-compatible judge (`--recipe.judge_model`; the paper's was
gpt-4-0314), at --scale=tiny our own tiny reward model (a stand-in that needs no network: the
numbers exercise the machinery and mean nothing about quality).
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

from dpo_jax.recipes.base import (
    Recipe,
    Report,
    command_stage,
    common_fields,
    config_ref,
    configs_dir,
    main_stage,
    parameter_label,
)
from dpo_jax.recipes.paper import PAPER_CLAIMS
from dpo_jax.recipes.table import paper_section

# Judge tokens per comparison for the cost estimate: the template (~150 tokens) around the prompt and
# two responses, and a short verdict. An estimate: the plan says so.
TEMPLATE_TOKENS, VERDICT_TOKENS = 150, 8


def config(name: str, scale: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    common_fields(c, scale)
    tiny = scale == "tiny"
    c.task = {"hh": "hh", "news": "news"}.get(name, "tldr")
    c.betas = (0.1,) if name == "hh" else (0.5,)
    c.ppo = name in ("tldr", "news")
    # The paper's temperatures; its out-of-distribution table reports 0 and 0.25.
    c.temperatures = (0.0, 0.25) if name == "news" else (0.0, 0.25, 0.5, 0.75, 1.0)
    c.best_of_n = 4 if tiny else 128
    c.num_prompts = 4 if tiny else 256
    c.max_new_tokens = 8 if tiny else 128
    c.batch_size = 4 if tiny else 16
    c.train_steps = 4 if tiny else 0
    c.ppo_steps = 2 if tiny else 0
    c.baseline = ""  # "" = the task's (winrate): the human-written reference for tldr and news, chosen for hh
    c.judge = "reward_model" if tiny else "openai"  # reward_model = this recipe's reward-model stage
    c.single_turn = True  # hh: the single-turn test prompts, as the paper
    c.labels = ""  # judge_agreement: a label file of human judgements (JSONL, see dpo_jax.judge_agreement)
    c.judge_model = ""  # openai: "" = the winrate command's default
    c.judge_price = ""  # openai: "IN,OUT" USD per million tokens, for models without a known price
    for kind in ("sft", "dpo", "reward_model", "ppo", "winrate"):
        c.args[kind] = ""
    return c


def missing(name: str, c) -> list[str]:
    gaps = []
    if name == "judge_agreement" and not c.labels:
        gaps.append(
            "the paper's human labels are not public: --recipe.labels=FILE adds the judge-vs-human stage"
        )
    return gaps


def _policy_name(beta: float) -> str:
    return f"dpo_beta_{parameter_label(beta)}"


def _winrate_stage(name: str, policy: str) -> str:
    """news may run in the tldr recipe's DIR (its training stages are the same, so reused): its own names."""
    return f"{'news_' if name == 'news' else ''}winrate_{policy}"


def _judge_flags(c, stage: str) -> dict[str, str]:
    if c.judge == "openai":
        flags = {"judge": "openai", "judge_cache": f"{{root}}/{stage}/judge_cache.jsonl"}
        flags.update({k: v for k, v in (("judge_model", c.judge_model), ("judge_price", c.judge_price)) if v})
        return flags
    return {"judge": c.judge, "judge_path": "{root}/reward_model/export"}


def _judge_calls(c, responses_per_prompt: int = 1) -> dict[str, str]:
    calls = len(c.temperatures) * c.num_prompts
    plan = {"samples": f"{calls * responses_per_prompt}", "judge_calls": str(calls)}
    if c.judge == "openai":
        from dpo_jax.judges.openai_chat import KNOWN_PRICES

        model = c.judge_model or "gpt-4o"
        price = (
            tuple(float(p) for p in c.judge_price.split(",")) if c.judge_price else KNOWN_PRICES.get(model)
        )
        tokens_in = TEMPLATE_TOKENS + 512 + 2 * c.max_new_tokens  # prompt up to the configs' 512 tokens
        if price:
            cost = calls * (tokens_in * price[0] + VERDICT_TOKENS * price[1]) / 1e6
            plan["judge_cost"] = f"about ${cost:.2f} ({model}; an estimate from {tokens_in} tokens per call)"
        else:
            plan["judge_cost"] = f"unknown: no price for {model} (--recipe.judge_price=IN,OUT)"
    return plan


def stages(name: str, c) -> list:
    tiny = c.scale == "tiny"
    file = f"{configs_dir(c)}/{'hh' if c.task == 'hh' else 'tldr'}.py"
    variant = "tiny" if tiny else ""
    inputs = (file, f"{configs_dir(c)}/common.py")
    if tiny:
        from dpo_jax.data.readers import fixture_dir

        sources = ("hh",) if c.task == "hh" else ("tldr_sft", "tldr_comparisons")
        inputs += tuple(fixture_dir(s) for s in sources)
    steps = {"num_train_steps": c.train_steps} if c.train_steps else {}
    train = dict(inputs=inputs, aot=True, plan=dict(steps=c.train_steps or "1 epoch"))
    sft_variant = ("sft," + variant).rstrip(",")
    out = [
        main_stage("sft", config_ref(file, sft_variant), {"seed": c.seed, **steps}, extra=c.args.sft, **train)
    ]
    on_sft = {"model.name_or_path": "{root}/sft", "seed": c.seed, **steps}
    out.append(
        main_stage(
            "reward_model",
            config_ref(file, variant),
            {**on_sft, "stage": "reward_model", "loss": "bradley_terry"},
            after=("sft",),
            extra=c.args.reward_model,
            **train,
        )
    )
    if name == "judge_agreement":
        flags = {
            "workdir": "{root}/reward_model",
            "task": c.task,
            "num_prompts": c.num_prompts,
            "seed": c.seed,
            "name": "judge_agreement",
            **_judge_flags(c, "judge_agreement"),
        }
        out.append(
            command_stage(
                "judge_agreement",
                "dpo_jax.winrate",
                flags,
                after=("reward_model",),
                extra="--check_judge " + c.args.winrate,
                kind="score",
                plan={"judge_calls": str(c.num_prompts)},
            )
        )
        if c.labels:  # the paper's table: the judge against a file of human labels (judge_agreement)
            flags = {
                "labels": c.labels,
                "task": c.task,
                "seed": c.seed,
                "out": "{root}/judge_vs_labels/judge.jsonl",
            }
            flags.update({k: v for k, v in _judge_flags(c, "judge_vs_labels").items() if k != "judge_cache"})
            out.append(
                command_stage(
                    "judge_vs_labels",
                    "dpo_jax.judge_agreement",
                    flags,
                    after=("reward_model",),
                    inputs=(c.labels,),
                    kind="score",
                    plan={"judge_calls": "one per distinct comparison of the labels file"},
                )
            )
        return out
    policies = {"sft": "sft"}
    for beta in c.betas:
        policies[_policy_name(beta)] = "dpo"
        out.append(
            main_stage(
                _policy_name(beta),
                config_ref(file, variant),
                {**on_sft, "beta": beta, "reference.precompute_logps": True},
                after=("sft",),
                extra=c.args.dpo,
                **train,
            )
        )
    if c.ppo:
        policies["ppo"] = "ppo"
        ppo = {
            **on_sft,
            "stage": "ppo",
            "ppo.reward_model": "{root}/reward_model",
            "tokenizer": "{root}/sft/export",
            "ppo.max_new_tokens": c.max_new_tokens,
        }
        if c.ppo_steps:
            ppo["num_train_steps"] = c.ppo_steps
        if tiny:
            ppo.update({"ppo.num_minibatches": 1, "ppo.num_epochs": 1})
        out.append(
            main_stage(
                "ppo",
                config_ref(file, variant),
                ppo,
                after=("sft", "reward_model"),
                inputs=inputs,
                extra=c.args.ppo,
                aot=True,
                plan=dict(steps=c.ppo_steps or "config"),
            )
        )
    sampling = {
        "task": c.task,
        "temperatures": c.temperatures,
        "num_prompts": c.num_prompts,
        "max_new_tokens": c.max_new_tokens,
        "batch_size": c.batch_size,
        "seed": c.seed,
    }
    if c.baseline:
        sampling["baseline"] = c.baseline
    if c.task == "hh" and c.single_turn:  # the paper's HH win rates: prompts with one human turn
        sampling["single_turn"] = True
    if tiny and name == "news":  # the TL;DR policies on news articles, judged against their highlights
        sampling["data_path"] = "fixture:cnn_dailymail"
    elif tiny and c.task == "tldr" and c.baseline in ("", "human"):
        sampling["human_reference_path"] = "fixture:tldr_sft"
    judge_after = ("reward_model",) if c.judge == "reward_model" else ()
    for policy in policies:
        stage = _winrate_stage(name, policy)
        out.append(
            command_stage(
                stage,
                "dpo_jax.winrate",
                {
                    "workdir": f"{{root}}/{policy}",
                    **sampling,
                    "name": stage,
                    "out_dir": f"{{root}}/{stage}",
                    **_judge_flags(c, stage),
                },
                after=(policy, *judge_after),
                extra=c.args.winrate,
                kind="score",
                plan=_judge_calls(c),
            )
        )
    if name == "hh":  # the paper's second HH figure: win rate over DPO training, one point per checkpoint
        policy = _policy_name(c.betas[0])
        stage = "winrate_over_training"
        flags = {"workdir": f"{{root}}/{policy}", **sampling, "name": stage, "out_dir": f"{{root}}/{stage}"}
        out.append(
            command_stage(
                stage,
                "dpo_jax.winrate",
                {**flags, "checkpoints": "all", **_judge_flags(c, stage)},
                after=(policy, *judge_after),
                extra=c.args.winrate,
                kind="score",
                plan={**_judge_calls(c), "note": "per kept checkpoint"},
            )
        )
    best = _winrate_stage(name, f"best_of_{c.best_of_n}")
    out.append(
        command_stage(
            best,
            "dpo_jax.winrate",
            {
                "workdir": "{root}/sft",
                **sampling,
                "name": best,
                "out_dir": f"{{root}}/{best}",
                "policy": f"best_of_n:{c.best_of_n}",
                "best_of_n_reward": "{root}/reward_model/export",
                **_judge_flags(c, best),
            },
            after=("sft", "reward_model"),
            extra=c.args.winrate,
            kind="score",
            plan=_judge_calls(c, c.best_of_n),
        )
    )
    return out


def report(name: str, c, root: Path) -> Report:
    """Win rate per method and temperature (ours), then the paper's reported figures (theirs)."""
    from dpo_jax.analysis.plots import MissingMatplotlib, plot_win_rates

    curves, rows = {}, []
    for stage in stages(name, c):
        if "winrate_" not in stage.name or stage.name == "winrate_over_training":
            continue
        policy = next(a for a in stage.args if a.startswith("--workdir=")).split("/")[-1]
        label = stage.name.split("winrate_")[1] if "best_of" in stage.name else policy
        result = json.loads((root / policy / "winrate" / f"{stage.name}.json").read_text())
        curves[label] = result["temperatures"]
        rows += [
            (label, t["temperature"], t["win_rate"], t.get("ci_low"), t.get("ci_high"), t.get("n"))
            for t in result["temperatures"]
        ]
    out = root / "report" / name
    out.mkdir(parents=True, exist_ok=True)
    judge = (
        "our tiny reward model (a stand-in, not GPT-4)"
        if c.judge == "reward_model"
        else c.judge_model or "openai"
    )
    baseline = c.baseline or ("chosen" if c.task == "hh" else "the human-written reference")
    ours = f"ours ({c.scale}; judge: {judge}; baseline: {baseline})"
    lines = [
        f"# {RECIPES[name].figure}",
        "",
        f"## {ours}",
        "",
        "| method | temperature | win rate | 95% interval | comparisons |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {m} | {t:g} | {w:.3f} | {lo:.3f}-{hi:.3f} | {n} |" for m, t, w, lo, hi, n in rows]
    lines += _over_training_section(name, c, root, out)
    lines += paper_section(PAPER_CLAIMS[name])
    gaps = missing(name, c)
    if gaps:
        lines += ["", "## Not in this table yet", "", *(f"- {gap}" for gap in gaps)]
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        figure = str(
            plot_win_rates(curves, out / "figure.png", title=f"{name}, {c.scale} scale\njudge: {judge}")
        )
    except MissingMatplotlib:
        figure = None
    return Report(figure, str(out / "table.md"), sorted(curves))


def _over_training_section(name: str, c, root: Path, out: Path) -> list[str]:
    """hh's second figure: the DPO run's win rate at each kept checkpoint (the winrate_over_training
    stage), as table rows, its figure copied beside the report's."""
    if name != "hh":
        return []
    import shutil

    policy = _policy_name(c.betas[0])
    results = [
        json.loads(p.read_text())
        for p in (root / policy / "winrate").glob("winrate_over_training_step*.json")
    ]
    rows = sorted(
        ((r["step"], t) for r in results for t in r["temperatures"]),
        key=lambda row: (row[0], row[1]["temperature"]),
    )
    lines = [
        "",
        f"## {policy}: win rate over training (each kept checkpoint; figure_over_training.png)",
        "",
        "| step | temperature | win rate | 95% interval | comparisons |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {step} | {t['temperature']:g} | {t['win_rate']:.3f} | {t.get('ci_low'):.3f}-{t.get('ci_high'):.3f} | "
        f"{t.get('n')} |"
        for step, t in rows
    ]
    figure = root / "winrate_over_training" / "winrate_over_training.png"
    if figure.exists():
        shutil.copyfile(figure, out / "figure_over_training.png")
    return lines


def agreement_report(c, root: Path) -> Report:
    result = json.loads((root / "reward_model" / "winrate" / "judge_agreement.json").read_text())
    out = root / "report" / "judge_agreement"
    out.mkdir(parents=True, exist_ok=True)
    judge = "our tiny reward model (a stand-in)" if c.judge == "reward_model" else c.judge_model or "openai"
    lines = [
        "# Judge agreement (the paper's judge-vs-human table)",
        "",
        f"## ours ({c.scale}; judge: {judge})",
        "",
        "| comparisons | agreement with the data's human labels | 95% interval |",
        "|---|---|---|",
        f"| {result.get('n')} | {result['agreement_with_humans']:.3f} | "
        f"{result.get('ci_low', float('nan')):.3f}-{result.get('ci_high', float('nan')):.3f} |",
    ]
    lines += paper_section(PAPER_CLAIMS["judge_agreement"])
    lines += ["", "## Not in this table yet", "", *(f"- {g}" for g in missing("judge_agreement", c))]
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Report(None, str(out / "table.md"), ["judge"])


def _recipe(name: str, figure: str) -> Recipe:
    if name == "judge_agreement":
        reporter = agreement_report
    else:

        def reporter(c, root):
            return report(name, c, root)

    return Recipe(
        name,
        figure,
        lambda scale: config(name, scale),
        lambda c: stages(name, c),
        reporter,
        lambda c: missing(name, c),
    )


RECIPES = {
    "tldr": _recipe("tldr", "Figure 2 (right): TL;DR win rate vs temperature"),
    "hh": _recipe("hh", "Figure 3: Anthropic-HH win rate vs chosen, and over training"),
    "news": _recipe("news", "Table: out-of-distribution (CNN/DailyMail) win rates"),
    "judge_agreement": _recipe("judge_agreement", "Table: judge vs human agreement"),
}
