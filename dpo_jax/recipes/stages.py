"""The stage builders every recipe shares, and the one place that says what a scale changes.

A recipe's config says its scale: "tiny" (tiny random models on the shipped fixtures), "paper" (the
paper's models and data from the hub), or "paper" with `rehearse` set (recipes/rehearsal.py: the paper's
plan, its grids, prompt selection, splits and cadence, run with tiny models on paper-shaped data made
in DIR, step and sample counts capped). The builders below turn that into stages:
- `small(c)`: the stages use the configs' `:tiny` model variant (tiny scale or a rehearsal);
- `data_overrides(c, source, eval_split)`: where a training stage reads its data in a rehearsal (the
  paper-shaped copy in DIR, under the paper's split names) and nothing otherwise;
- `data_path(c, source, paper)`: the same for the evaluation commands' `--data_path`.
Each stage declares its outputs (`Stage.outputs`, paths with `{root}`), and a report reads them there,
never from the stage's arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpo_jax.recipes.base import command_stage, config_ref, main_stage, parameter_label
from dpo_jax.recipes.engine import Stage

REHEARSAL_DATA = "rehearsal_data"  # DIR/<this>/<source>/<split>.jsonl in a rehearsal


def small(c) -> bool:
    return c.scale == "tiny" or bool(c.get("rehearse", False))


def variant(c, *names: str) -> str:
    return ",".join([*names, *(["tiny"] if small(c) else [])])


def data_overrides(c, source: str, eval_split: str) -> dict[str, Any]:
    if not c.get("rehearse", False):
        return {}
    return {"data.path": f"{{root}}/{REHEARSAL_DATA}/{source}", "data.eval_split": eval_split}


def data_path(c, source: str, paper: str) -> str:
    if c.get("rehearse", False):
        return f"{{root}}/{REHEARSAL_DATA}/{source}"
    return f"fixture:{source}" if c.scale == "tiny" else paper


def data_inputs(c, *sources: str) -> tuple[str, ...]:
    """The shipped fixtures a tiny-scale stage reads (hashed into its fingerprint)."""
    if c.scale != "tiny":
        return ()
    from dpo_jax.data.readers import fixture_dir

    return tuple(fixture_dir(s) for s in sources)


def after_data(c) -> tuple[str, ...]:
    """A rehearsal's data stage comes before every stage that reads data."""
    return (REHEARSAL_DATA,) if c.get("rehearse", False) else ()


def cadence(c) -> dict[str, Any]:
    """A training run saved every `eval_every` steps, every checkpoint kept: each one is a point of the
    figure (the paper evaluates every run every 100 steps)."""
    if not c.eval_every:
        return {}
    return {"checkpoint_every_steps": c.eval_every, "keep_checkpoints": c.keep_checkpoints}


def training_stage(
    name: str,
    c,
    config_file: str,
    config_variant: str,
    overrides: dict[str, Any],
    *,
    after=(),
    inputs=(),
    args: str = "",
    steps: int | str = 0,
    plan: dict | None = None,
) -> Stage:
    """A `dpo_jax.main` stage whose run (workdir, export, checkpoints) is its output "run"."""
    fields = {**overrides, **({"num_train_steps": steps} if steps else {})}
    return main_stage(
        name,
        config_ref(config_file, config_variant),
        fields,
        after=(*after_data(c), *after),
        inputs=inputs,
        extra=args,
        aot=True,
        outputs={"run": f"{{root}}/{name}"},
        plan={"steps": steps or "1 epoch", **(plan or {})},
    )


def policy_run(stages: list[Stage], name: str) -> str:
    """The run directory a stage declared (`{root}/...`)."""
    return next(s for s in stages if s.name == name).outputs["run"]


def winrate_stage(
    name: str,
    policy: str,
    flags: dict[str, Any],
    *,
    after=(),
    extra: str = "",
    plan: dict | None = None,
) -> Stage:
    """A `dpo_jax.winrate` stage judging `policy` (a run directory with `{root}`, or a model name); its
    result JSON is its output "result" (in the policy run's winrate/ when the policy is a run)."""
    result_dir = f"{policy}/winrate" if policy.startswith("{root}") else f"{{root}}/{name}"
    return command_stage(
        name,
        "dpo_jax.winrate",
        {"workdir": policy, **flags, "name": name, "out_dir": f"{{root}}/{name}"},
        after=after,
        extra=extra,
        kind="score",
        plan=plan or {},
        outputs={"result": f"{result_dir}/{name}.json", "labels": f"{result_dir}/{name}.labels.jsonl"},
    )


def read_output(root: Path, stage: Stage, output: str) -> dict:
    return json.loads(Path(stage.outputs[output].replace("{root}", str(root))).read_text())


def name_with(prefix: str, value: float) -> str:
    return f"{prefix}_{parameter_label(value)}"


def prompting_model(c) -> str:
    """The prompting baseline's base model: the tiny random LM stage at small scales."""
    return "{root}/base" if small(c) else c.prompting_model
