"""What the win-rate recipes share (tldr, hh, news; judge_agreement builds on them): their config, the
training stages of a method, the win-rate stage of a method, the judge's flags and cost, the report.

Every method of a recipe is judged on one prompt set: `num_prompts` prompts drawn by `prompt_seed` from
the task's evaluation split (tldr: the posts of the human-reference split, tldr_sft's test split, so
each has its human TL;DR; hh: the single-turn prompts of HH's test split; news: CNN/DailyMail's test
articles), the same for every method and temperature. The report lists the set's prompt ids and says
whether every row was judged on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

from dpo_jax.recipes.base import Report, command_stage, common_fields, configs_dir
from dpo_jax.recipes.stages import (
    after_data,
    data_inputs,
    data_overrides,
    data_path,
    name_with,
    read_output,
    small,
    training_stage,
    variant,
    winrate_stage,
)
from dpo_jax.recipes.table import paper_section

# Judge tokens per comparison for the cost estimate: the template (~150 tokens) around the prompt and
# two responses, and a short verdict. An estimate: the plan says so.
TEMPLATE_TOKENS, VERDICT_TOKENS = 150, 8
PROMPTS_DIR = Path(__file__).resolve().parents[2] / "configs" / "prompts"
HUB = {
    "tldr_sft": "CarperAI/openai_summarize_tldr",
    "hh": "Anthropic/hh-rlhf",
    "cnn_dailymail": "abisee/cnn_dailymail",
    "tldr_comparisons": "CarperAI/openai_summarize_comparisons",
}


def config(task: str, scale: str) -> ml_collections.ConfigDict:
    """The fields every win-rate recipe has, at their paper values (tiny: small counts)."""
    c = ml_collections.ConfigDict()
    common_fields(c, scale)
    tiny = scale == "tiny"
    c.task = task
    c.betas = (0.1,) if task == "hh" else (0.5,)
    c.temperatures = (0.0, 0.25, 0.5, 0.75, 1.0)
    c.best_of_n = 4 if tiny else 128
    c.num_prompts = 4 if tiny else 256
    c.max_new_tokens = 8 if tiny else 128
    c.batch_size = 4 if tiny else 16
    c.train_steps = 4 if tiny else 0  # 0 = one epoch (the config's)
    c.ppo_steps = 4 if tiny else 1000
    c.ppo_kl_target = 6.0  # PPO's adaptive controller target (one PPO run on these figures)
    c.baseline = ""  # "" = the task's (winrate): the human reference (tldr, news), chosen (hh)
    c.judge = "reward_model" if tiny else "openai"  # reward_model = this recipe's reward-model stage
    c.judge_model = ""  # openai: "" = the winrate command's default
    c.judge_price = ""  # openai: "IN,OUT" USD per million tokens, for models without a known price
    c.prompting_model = ""  # the prompting baseline's base model ("" = none)
    c.prompt_template = ""  # "" = the template shipped in configs/prompts/ for the task
    c.shots = 0
    c.single_turn = task == "hh"  # hh: the single-turn test prompts, as the paper
    for kind in ("sft", "dpo", "preferred_ft", "reward_model", "ppo", "winrate"):
        c.args[kind] = ""
    return c


REHEARSAL = dict(num_prompts=4, max_new_tokens=8, batch_size=4, train_steps=4, ppo_steps=4, best_of_n=4)


def config_file(c) -> str:
    return f"{configs_dir(c)}/{'hh' if c.task == 'hh' else 'tldr'}.py"


def sft_source(c) -> tuple[str, str]:
    """(source, its validation split) of the SFT stage's data."""
    return ("hh", "test") if c.task == "hh" else ("tldr_sft", "valid")


def pref_source(c) -> tuple[str, str]:
    return ("hh", "test") if c.task == "hh" else ("tldr_comparisons", "test")


def _inputs(c) -> tuple[str, ...]:
    """What every training stage reads outside DIR: the config files, and at tiny scale the fixtures."""
    sft_src, pref_src = sft_source(c)[0], pref_source(c)[0]
    return (config_file(c), f"{configs_dir(c)}/common.py", *data_inputs(c, *sorted({sft_src, pref_src})))


def from_sft(c) -> dict:
    """The fields of a run that starts from the SFT stage's model, on the preference data."""
    pref_src, pref_eval = pref_source(c)
    return {"model.name_or_path": "{root}/sft", "seed": c.seed, **data_overrides(c, pref_src, pref_eval)}


def method_stage(c, name: str, fields: dict, *, sft: bool = False, after=("sft",), args: str = "", **kw):
    """A training stage of one method, from the SFT model (`from_sft`) unless `fields` say otherwise:
    what a recipe module calls to add a method of its own (its stage, then its name in `policies`)."""
    kw = {"inputs": _inputs(c), "steps": c.train_steps, **kw}
    variant_names = ("sft",) if sft else ()
    fields = {**from_sft(c), **fields}
    return training_stage(
        name, c, config_file(c), variant(c, *variant_names), fields, after=after, args=args, **kw
    )


def training_stages(c, methods) -> list:
    """The training stages `methods` need (sft always; reward_model; dpo betas; preferred_ft; ppo),
    the same arguments whichever recipe asks, so recipes sharing a DIR reuse them."""
    sft_src, sft_eval = sft_source(c)
    pref_src, pref_eval = pref_source(c)
    sft_fields = {"seed": c.seed, **data_overrides(c, sft_src, sft_eval)}
    out = [
        training_stage(
            "sft", c, config_file(c), variant(c, "sft"), sft_fields, args=c.args.sft, inputs=_inputs(c),
            steps=c.train_steps,
        )
    ]  # fmt: skip
    if {"reward_model", "ppo", "best_of_n"} & set(methods) or c.judge == "reward_model":
        fields = {"stage": "reward_model", "loss": "bradley_terry"}
        out.append(method_stage(c, "reward_model", fields, args=c.args.reward_model))
    if "dpo" in methods:
        for beta in c.betas:
            fields = {"beta": beta, "reference.precompute_logps": True, **hh_cadence(c)}
            out.append(method_stage(c, name_with("dpo_beta", beta), fields, args=c.args.dpo))
    if "preferred_ft" in methods:  # SFT on the comparisons' chosen summaries, from the SFT model
        fields = {
            "data.source": pref_src,
            "data.path": data_path(c, pref_src, HUB[pref_src]),
            "data.eval_split": pref_eval,
        }
        out.append(method_stage(c, "preferred_ft", fields, sft=True, args=c.args.preferred_ft))
    if "ppo" in methods:
        ppo = {
            "stage": "ppo",
            "ppo.reward_model": "{root}/reward_model",
            "ppo.kl_target": c.ppo_kl_target,
            "tokenizer": "{root}/sft/export",
            "ppo.max_new_tokens": c.max_new_tokens,
            **({"ppo.num_minibatches": 1, "ppo.num_epochs": 1} if small(c) else {}),
        }
        out.append(method_stage(c, "ppo", ppo, after=("sft", "reward_model"), args=c.args.ppo, steps=c.ppo_steps,
                                plan={"samples": "a rollout batch per step"}))  # fmt: skip
    if "prompting" in methods and small(c):  # the base model's stand-in: the tiny random LM
        out.append(
            command_stage(
                "base",
                "dpo_jax.recipes.tiny_classifier",
                {"out": "{root}/base", "kind": "lm", "seed": c.seed},
                kind="model",
                outputs={"run": "{root}/base"},
            )
        )
    return out


def hh_cadence(c) -> dict:
    """hh's DPO run keeps a checkpoint every `eval_every` steps: the win rate over training."""
    if c.task != "hh" or not c.get("eval_every"):
        return {}
    return {"checkpoint_every_steps": c.eval_every, "keep_checkpoints": c.keep_checkpoints}


def sampling_flags(c, temperatures=None) -> dict:
    """The flags every win-rate stage of the recipe shares: one prompt set (task, split, seed, count)."""
    flags = {
        "task": c.task,
        "temperatures": temperatures if temperatures is not None else c.temperatures,
        "num_prompts": c.num_prompts,
        "prompt_seed": c.seed,
        "max_new_tokens": c.max_new_tokens,
        "batch_size": c.batch_size,
        "seed": c.seed,
    }
    if c.baseline:
        flags["baseline"] = c.baseline
    if c.task == "hh":  # every method's prompts from HH's test split, never from a run's own data
        flags.update(data_source="hh", data_path=data_path(c, "hh", HUB["hh"]), single_turn=c.single_turn)
    elif c.task == "news":
        flags["data_path"] = data_path(c, "cnn_dailymail", HUB["cnn_dailymail"])
    elif c.baseline in ("", "human"):  # tldr: the posts of the human-reference split
        flags.update(
            human_reference_path=data_path(c, "tldr_sft", HUB["tldr_sft"]), human_reference_split="test"
        )
    return flags


def judge_flags(c, stage: str) -> dict:
    if c.judge == "openai":
        flags = {"judge": "openai", "judge_cache": f"{{root}}/{stage}/judge_cache.jsonl"}
        flags.update({k: v for k, v in (("judge_model", c.judge_model), ("judge_price", c.judge_price)) if v})
        return flags
    return {"judge": c.judge, "judge_path": "{root}/reward_model/export"}


def judge_after(c) -> tuple[str, ...]:
    return ("reward_model",) if c.judge == "reward_model" else ()


def judge_calls(c, samples_per_prompt: int = 1, temperatures=None) -> dict[str, str]:
    calls = len(temperatures if temperatures is not None else c.temperatures) * c.num_prompts
    plan = {"samples": f"{calls * samples_per_prompt}", "judge_calls": str(calls)}
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


def method_winrates(c, prefix: str, methods: dict[str, str]) -> list:
    """One win-rate stage per method: {label: policy run or model}, every one on the recipe's prompt set."""
    out = []
    for label, policy in methods.items():
        stage = f"{prefix}winrate_{label}"
        flags = {**sampling_flags(c), **judge_flags(c, stage)}
        samples = 1
        after = [policy[len("{root}/") :]] if policy.startswith("{root}/") else []
        if label.startswith("best_of_"):
            flags.update(policy=f"best_of_n:{c.best_of_n}", best_of_n_reward="{root}/reward_model/export")
            after, samples = ["sft", "reward_model"], c.best_of_n
        if label == "prompting":
            template = c.prompt_template or str(
                PROMPTS_DIR / ("hh_two_shot.txt" if c.task == "hh" else "tldr_zero_shot.txt")
            )
            flags.update(prompt_template=template, shots=c.shots)
            if c.task == "hh":
                flags.update(data_source="hh", data_path=data_path(c, "hh", HUB["hh"]))
        out.append(
            winrate_stage(
                stage,
                policy,
                flags,
                after=(*after_data(c), *after, *judge_after(c)),
                extra=c.args.winrate,
                plan=judge_calls(c, samples),
            )
        )
    return out


def report(name: str, figure: str, c, root: Path, stages, claims, missing, notes=()) -> Report:
    """Win rate per method and temperature (ours) on the one prompt set, then the paper's figures."""
    from dpo_jax.analysis.plots import MissingMatplotlib, plot_win_rates

    curves, rows, sets = {}, [], {}
    for stage in stages:
        if "result" not in stage.outputs or "over_training" in stage.name:
            continue
        label = stage.name.split("winrate_", 1)[1]
        result = read_output(root, stage, "result")
        curves[label] = result["temperatures"]
        sets[label] = (result.get("prompt_set"), result.get("prompt_ids", []), result.get("prompt_seed"))
        rows += [
            (
                label,
                t["temperature"],
                t["win_rate"],
                t.get("ci_low"),
                t.get("ci_high"),
                t.get("n"),
                result.get("prompt_set"),
            )
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
    scale = f"{c.scale}, rehearsal" if c.rehearse else c.scale
    lines = [f"# {figure}", "", f"## ours ({scale}; judge: {judge}; baseline: {baseline})", ""]
    lines += [
        "| method | temperature | win rate | 95% interval | comparisons | prompt set |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {m} | {t:g} | {w:.3f} | {lo:.3f}-{hi:.3f} | {n} | {s} |" for m, t, w, lo, hi, n, s in rows]
    lines += prompt_set_section(sets)
    if c.rehearsal:
        notes = [*notes, f"rehearsal caps: {c.rehearsal}"]
    if notes:
        lines += ["", "## Settings and their sources", "", *(f"- {note}" for note in notes)]
    lines += over_training_section(name, c, root, out)
    lines += paper_section(claims)
    if missing:
        lines += ["", "## Not in this table yet", "", *(f"- {gap}" for gap in missing)]
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "table.json").write_text(
        json.dumps({"rows": rows, "prompt_sets": {k: list(v) for k, v in sets.items()}}, indent=1),
        encoding="utf-8",
    )
    try:
        figure_path = str(
            plot_win_rates(curves, out / "figure.png", title=f"{name}, {scale} scale\njudge: {judge}")
        )
    except MissingMatplotlib:
        figure_path = None
    return Report(figure_path, str(out / "table.md"), sorted(curves))


def prompt_set_section(sets: dict) -> list[str]:
    digests = {digest for digest, _, _ in sets.values()}
    if not sets:
        return []
    if len(digests) == 1:
        digest, ids, seed = next(iter(sets.values()))
        return [
            "",
            f"Every method was judged on one prompt set: {digest} ({len(ids)} prompts, seed {seed}); ids:",
            "",
            " ".join(ids),
        ]
    lines = ["", "**The methods were judged on different prompt sets:**", ""]
    return lines + [f"- {label}: {digest} ({len(ids)} prompts)" for label, (digest, ids, _) in sets.items()]


def over_training_section(name: str, c, root: Path, out: Path) -> list[str]:
    """hh's second figure: the DPO run's win rate at each kept checkpoint, one row per step and
    temperature, its figure copied beside the report's."""
    if name != "hh":
        return []
    import shutil

    policy = name_with("dpo_beta", c.betas[0])
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
        f"## {policy}: win rate over training (every {c.eval_every} steps; figure_over_training.png)",
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


def sources_notes(c, sources: dict[str, str]) -> list[str]:
    return [f"{field} = {c[field]}: {source}" for field, source in sources.items() if field in c]


def policies(c, *runs: str) -> dict[str, str]:
    """label -> the policy a win-rate stage judges: SFT, DPO over betas, the given `runs` (stage names),
    Best of N of SFT, and the prompting baseline when it has a model."""
    from dpo_jax.recipes.stages import prompting_model

    out = {"sft": "{root}/sft"}
    out.update({name_with("dpo_beta", b): f"{{root}}/{name_with('dpo_beta', b)}" for b in c.betas})
    out.update({run: f"{{root}}/{run}" for run in runs})
    out[f"best_of_{c.best_of_n}"] = "{root}/sft"
    if prompting_model(c):
        out["prompting"] = prompting_model(c)
    return out
