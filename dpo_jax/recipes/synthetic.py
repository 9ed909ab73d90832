"""The `synthetic` recipe: DPO against the exact optimum, its gain ratio against the number of pairs,
and the controls that say where the residual comes from (issue 32).

    python -m dpo_jax.experiment --recipe=synthetic --scale=tiny --workdir=/tmp/synthetic-recipe
    python -m dpo_jax.experiment --recipe=synthetic --scale=paper --workdir=/tmp/synthetic-sweep

Stages (each `python -m dpo_jax.synthetic.steps`, dpo_jax/synthetic/sweep.py): `sft` (pi_ref and its
exact tables) -> `pairs_<P>` for each pairs-per-prompt P (one pair set each, shared by every beta and
control) -> `dpo_beta_<B>_pairs_<P>` for each beta and P -> `controls_beta_<B>` (the tabular policy on
each pair set with the same loss; the tabular policy at the population loss) -> `optim_<variant>`
(DPO at beta `betas[0]` on the largest pair set with another learning rate, step count or batch) ->
`evaluate` (exact statistics of every DPO run; where the largest run departs from pi*). The report:
report/synthetic/table.md and figure.png.

--scale=paper is the task of configs/synthetic.py (V = 8, 4096 completions per prompt, 2048 pair
prompts); --scale=tiny its `:tiny` variant (V = 4, 64 completions), seconds per stage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ml_collections

from dpo_jax.recipes.base import Recipe, Report, command_stage, common_fields, config_ref, configs_dir
from dpo_jax.recipes.base import parameter_label as label

STEPS_MODULE = "dpo_jax.synthetic.steps"
# name -> (learning-rate factor, step factor, batch factor); the batch variant keeps the epochs.
VARIANTS = {
    "lr_x0.3": (0.3, 1, 1),
    "lr_x3": (3.0, 1, 1),
    "steps_x2": (1.0, 2, 1),
    "batch_x4": (1.0, 0.25, 4),
}


def config(scale: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    common_fields(c, scale)
    tiny = scale == "tiny"
    c.betas = (0.1, 1.0)  # the paper's usual beta, and one where the KL is small
    c.pairs_per_prompt = (2, 8) if tiny else (4, 16, 64, 256)
    c.num_pair_prompts = 16 if tiny else 2048  # configs/synthetic.py's
    # DPO's steps at P pairs per prompt: enough for `epochs` passes, at least `min_steps`
    # (1000, 1024, 4096, 16384 at paper scale: about the runs).
    c.epochs = 2.0
    c.min_steps = 8 if tiny else 1000
    c.learning_rate = 1e-2 if tiny else 3e-4
    c.batch_size = 16 if tiny else 64
    # Comma separated, "" = none (a string, so that --recipe.optimisation=lr_x3,batch_x4 parses).
    c.optimisation = "lr_x3" if tiny else ",".join(VARIANTS)
    # The controls: on the first `train_eval_prompts` pair prompts; the population loss costs
    # (V ** T) ** 2 per prompt and iteration, hence its few prompts.
    c.train_eval_prompts = 8 if tiny else 256
    c.population_prompts = 4 if tiny else 8
    c.tabular_learning_rate = 1.0  # of 4 / (beta**2 * the most pairs on one logit): stable below 2
    c.tabular_steps = 200 if tiny else 5000
    for kind in ("sft", "pairs", "dpo", "controls", "evaluate"):
        c.args[kind] = ""
    return c


def _steps(c, pairs_per_prompt: int, factor: float = 1.0, batch: int | None = None) -> int:
    batch = batch or c.batch_size
    epochs_steps = math.ceil(c.epochs * c.num_pair_prompts * pairs_per_prompt / batch)
    return max(1, int(max(c.min_steps, epochs_steps) * factor))


def _check(c) -> None:
    if not c.betas or not c.pairs_per_prompt:
        raise ValueError("recipe.betas and recipe.pairs_per_prompt need at least one value each")
    if any(not b > 0 for b in c.betas) or len(set(c.betas)) != len(c.betas):
        raise ValueError(f"recipe.betas={c.betas}: need distinct betas > 0")
    if any(not float(p).is_integer() or p < 1 for p in c.pairs_per_prompt):
        raise ValueError(f"recipe.pairs_per_prompt={c.pairs_per_prompt}: each must be a whole number >= 1")
    unknown = sorted(set(variants(c)) - set(VARIANTS))
    if unknown:
        raise ValueError(f"recipe.optimisation: unknown {unknown}; known: {sorted(VARIANTS)}")


def variants(c) -> list[str]:
    return [v.strip() for v in c.optimisation.split(",") if v.strip()]


def dpo_name(beta: float, pairs_per_prompt: int) -> str:
    return f"dpo_beta_{label(beta)}_pairs_{pairs_per_prompt}"


def stages(c) -> list:
    _check(c)
    config_file = f"{configs_dir(c)}/synthetic.py"
    inputs = (config_file, f"{configs_dir(c)}/common.py")
    base = {
        "config": config_ref(config_file, "tiny" if c.scale == "tiny" else ""),
        "config.seed": c.seed,
        "config.synthetic.num_pair_prompts": c.num_pair_prompts,
        "config.global_batch_size": c.batch_size,
        "config.learning_rate": c.learning_rate,
    }

    def step(name, kind, flags, *, after=(), stage_kind="train", plan=None):
        flags = {"step": kind, **base, "workdir": f"{{root}}/{name}", **flags}
        return command_stage(
            name,
            STEPS_MODULE,
            flags,
            after=after,
            inputs=inputs,
            extra=c.args[kind],
            kind=stage_kind,
            plan=plan or {},
        )

    pairs_list = sorted({int(p) for p in c.pairs_per_prompt})
    out = [step("sft", "sft", {}, plan={"steps": "configs/synthetic.py's synthetic.sft"})]
    for p in pairs_list:
        flags = {"sft": "{root}/sft", "config.synthetic.pairs_per_prompt": p}
        out.append(
            step(
                f"pairs_{p}",
                "pairs",
                flags,
                after=("sft",),
                stage_kind="sample",
                plan={"pairs": f"{c.num_pair_prompts} prompts x {p}"},
            )
        )

    def dpo(name, beta, p, *, variant="", lr_factor=1.0, step_factor=1.0, batch_factor=1):
        batch = c.batch_size * batch_factor
        steps = _steps(c, p, step_factor, batch)
        flags = {
            "sft": "{root}/sft",
            "pairs": f"{{root}}/pairs_{p}",
            "variant": variant,
            "config.synthetic.pairs_per_prompt": p,
            "config.beta": beta,
            "config.num_train_steps": steps,
            "config.learning_rate": c.learning_rate * lr_factor,
            "config.global_batch_size": batch,
        }
        return step(name, "dpo", flags, after=("sft", f"pairs_{p}"), plan={"steps": steps, "batch": batch})

    runs = []
    for beta in c.betas:
        for p in pairs_list:
            out.append(dpo(dpo_name(beta, p), beta, p))
            runs.append(out[-1].name)
    for beta in c.betas:
        flags = {
            "sft": "{root}/sft",
            "pairs": [f"{{root}}/pairs_{p}" for p in pairs_list],
            "config.beta": beta,
            "train_eval_prompts": c.train_eval_prompts,
            "population_prompts": c.population_prompts,
            "tabular_learning_rate": c.tabular_learning_rate,
            "tabular_steps": c.tabular_steps,
        }
        out.append(
            step(
                f"controls_beta_{label(beta)}",
                "controls",
                flags,
                after=("sft", *(f"pairs_{p}" for p in pairs_list)),
                stage_kind="score",
                plan={"tabular_steps": c.tabular_steps, "population_prompts": c.population_prompts},
            )
        )
    for variant in variants(c):
        lr_factor, step_factor, batch_factor = VARIANTS[variant]
        out.append(
            dpo(
                f"optim_{variant}",
                c.betas[0],
                pairs_list[-1],
                variant=variant,
                lr_factor=lr_factor,
                step_factor=step_factor,
                batch_factor=batch_factor,
            )
        )
        runs.append(out[-1].name)
    flags = {
        "sft": "{root}/sft",
        "runs": [f"{{root}}/{r}" for r in runs],
        "train_eval_prompts": c.train_eval_prompts,
    }
    out.append(
        step(
            "evaluate",
            "evaluate",
            flags,
            after=("sft", *runs),
            stage_kind="score",
            plan={"policies": len(runs)},
        )
    )
    return out


def report(c, root: Path) -> Report:
    from dpo_jax.synthetic import sweep, sweep_report

    evaluation = json.loads((root / "evaluate" / sweep.EVALUATION_FILE).read_text())
    controls = [
        json.loads((root / f"controls_beta_{label(beta)}" / sweep.CONTROLS_FILE).read_text())
        for beta in c.betas
    ]
    out = root / "report" / "synthetic"
    out.mkdir(parents=True, exist_ok=True)
    table = out / "table.md"
    table.write_text(sweep_report.format_table(evaluation, controls))
    try:
        figure = str(sweep_report.plot(evaluation, controls, out / "figure.png"))
    except ImportError:  # matplotlib is optional (pip install dpo_jax[plot]); the table says it all
        figure = None
    methods = ["dpo", "tabular", "population", *(f"optim_{v}" for v in variants(c))]
    return Report(figure, str(table), methods)


RECIPE = Recipe(
    "synthetic", "issue 32: DPO's gain ratio vs pairs on the exact-optimum task", config, stages, report
)
