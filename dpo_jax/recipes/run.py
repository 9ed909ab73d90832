"""`run_recipe`: a recipe's stages in DIR, then its report and one RESULT line; or, on a dry run, its plan.

The plan lists every stage (its runs, step counts, samples to draw, judge calls and their estimated
cost) and, at --scale=paper, compiles each training stage's programs for a named target with the
aot library (`dpo_jax.perf.aot.compile_config`: the same checks as `python -m dpo_jax.aot`).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

from dpo_jax import UserError
from dpo_jax.config.command_line import result_line
from dpo_jax.config.fields import PROGRAMS, entries_without
from dpo_jax.recipes.base import SCALES, Recipe, apply_overrides
from dpo_jax.recipes.engine import Runner, Stage, check_dag
from dpo_jax.run.workdir import WorkdirLock

RECIPE_FILE = "RECIPE.json"


def build(recipe: Recipe, scale: str, overrides: list[str], *, rehearse: bool = False):
    """(the recipe's config, its stages): the scale's config (a rehearsal's caps applied), then the
    user's `--recipe.` overrides; a contradiction with --scale / --rehearse is refused."""
    from dpo_jax.recipes.rehearsal import rehearse as rehearse_plan

    if scale not in SCALES:
        raise UserError(f"--scale={scale}: expected one of {', '.join(SCALES)}")
    config = recipe.config(scale)
    if rehearse:
        if recipe.rehearsal is None:
            raise UserError(f"--rehearse: recipe {recipe.name} runs at paper scale on this machine as it is")
        rehearse_plan(config, recipe.rehearsal)
    apply_overrides(config, overrides)
    if config.scale != scale or bool(config.rehearse) != rehearse:
        raise UserError(
            f"--recipe.scale / --recipe.rehearse contradict --scale={scale}"
            f"{' --rehearse' if rehearse else ''}: set the scale with --scale (and --rehearse) only"
        )
    try:
        stages = recipe.stages(config)
    except ValueError as error:
        raise UserError(str(error)) from None
    check_dag(stages)
    return config, stages


def check_stages(stages: list[Stage]) -> int:
    """Every training stage's config through the start-up checks that stage runs first (the same
    functions: training.checks.validate_config, ppo.loop.check_ppo_config), before any stage starts;
    a UserError naming the stage otherwise. Returns how many stages were checked."""
    from dpo_jax.ppo.loop import check_ppo_config
    from dpo_jax.training.checks import validate_config

    checked = 0
    for stage in (s for s in stages if s.aot):
        try:
            stage_cfg = stage_config(stage, "")
            (check_ppo_config if stage_cfg.stage == "ppo" else validate_config)(stage_cfg)
        except (UserError, ValueError) as error:
            raise UserError(f"stage {stage.name}: {error}") from None
        checked += 1
    return checked


def reference_logps_counts(root: Path, stages: list[Stage]) -> dict[str, int]:
    """How the recipe's runs got their reference log-probs, as each recorded when it ran."""
    from dpo_jax.evaluation.reference_cache import STATUS_FILENAME

    counts = {"computed": 0, "reused": 0}
    for stage in stages:
        status_file = root / stage.name / STATUS_FILENAME
        if status_file.exists():
            counts[json.loads(status_file.read_text())["status"]] += 1
    return counts


def run_recipe(
    recipe: Recipe, scale: str, workdir: str, overrides: list[str], *, log=print, rehearse: bool = False
) -> dict[str, Any]:
    config, stages = build(recipe, scale, overrides, rehearse=rehearse)
    check_stages(stages)
    if recipe.blocked(config):
        raise UserError(
            f"recipe {recipe.name} cannot run yet: {recipe.blocked(config)}; --dry_run prints its plan"
        )
    root = Path(os.path.abspath(workdir))
    root.mkdir(parents=True, exist_ok=True)
    if int(config.worker):
        return _follow_recipe(recipe, config, root, stages, log=log)
    # One recipe at a time in DIR: a second one would supersede or resume the first one's stages under it.
    with WorkdirLock(root, single_process=True):
        (root / RECIPE_FILE).write_text(
            json.dumps(
                {"recipe": recipe.name, "scale": scale, "config": config.to_dict()}, indent=1, default=str
            )
        )
        for gap in recipe.missing(config):
            log(f"not in this recipe yet: {gap}")
        for line in config.rehearsal.split("; ") if config.rehearsal else ():
            log(f"rehearsal: {line}")
        start = time.time()
        records = _run_stages(config, root, stages, log=log)
        report = recipe.report(config, root) if recipe.report else None
        if report:
            log(Path(report.table).read_text(encoding="utf-8"))
        result = {
            "recipe": recipe.name,
            "scale": scale,
            "rehearse": rehearse,
            "stages": [{"name": r.name, "status": r.status, "seconds": round(r.seconds, 1)} for r in records],
            "seconds": round(time.time() - start, 1),
            "figure": report.figure if report else None,
            "table": report.table if report else None,
            "methods": report.methods if report else [],
            "reference_logps": reference_logps_counts(root, stages),
            "missing": recipe.missing(config),
        }
        log(result_line(result))
    return result


def _run_stages(config, root: Path, stages: list[Stage], *, log=print) -> list:
    """Every stage in order, as the recipe's worker (0: the lead) under its launcher and session."""
    launcher = tuple(shlex.split(config.launcher))
    runner = Runner(
        str(root),
        log=log,
        launcher=launcher,
        worker=int(config.worker),
        session=config.session,
        environment=compilation_cache(config, root),
    )
    with runner.handling_preemption():  # a SIGTERM between two stages stops the recipe with 75 too
        return [runner.run(stage) for stage in stages]


def compilation_cache(config, root: Path) -> dict[str, str]:
    """The stages share JAX's persistent compilation cache in DIR/.compilation_cache (unless the
    environment names one): runs of a grid whose programs are equal (PPO's KL targets, preferred-FT's
    seeds, the evaluations) compile once. At small scales every program is cached (no time threshold)."""
    if not config.compilation_cache:
        return {}
    env = {"JAX_COMPILATION_CACHE_DIR": str(root / ".compilation_cache")}
    if config.scale == "tiny" or config.rehearse:
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _follow_recipe(recipe: Recipe, config, root: Path, stages: list[Stage], *, log=print) -> dict[str, Any]:
    """Worker N > 0 of a multi-host slice: the stages on the devices run here beside the lead's runs
    (each command joins jax.distributed); the lead alone takes DIR's lock, keeps the books and writes
    the report and the RESULT line."""
    worker = int(config.worker)
    records = _run_stages(config, root, stages, log=log)
    log(f"worker {worker}: {len(records)} stages done; the lead worker (0) writes the report")
    return {
        "recipe": recipe.name,
        "worker": worker,
        "stages": [{"name": r.name, "status": r.status, "seconds": round(r.seconds, 1)} for r in records],
    }


def plan(
    recipe: Recipe, scale: str, workdir: str, overrides: list[str], *, log=print, rehearse: bool = False
) -> dict[str, Any]:
    config, stages = build(recipe, scale, overrides, rehearse=rehearse)
    root = os.path.abspath(workdir)
    checked = check_stages(stages)  # before compiling: a stage that would refuse to start stops the plan
    label = f"{scale}, rehearsal" if rehearse else scale
    log(f"recipe {recipe.name} ({recipe.figure}), scale {label}, {len(stages)} stages in {root}:")
    for number, stage in enumerate(stages, 1):
        details = ", ".join(f"{k} {v}" for k, v in stage.plan.items())
        after = f" after {', '.join(stage.after)}" if stage.after else ""
        log(f"{number:3d}. {stage.name} [{stage.kind}]{after}{': ' + details if details else ''}")
        log("     python -m " + " ".join(shlex.quote(a.replace("{root}", root)) for a in stage.command))
    for gap in recipe.missing(config):
        log(f"not in this recipe yet: {gap}")
    for field, source in recipe.sources(config).items():
        log(f"{field} = {config[field]}: {source}")
    for line in config.rehearsal.split("; ") if config.rehearsal else ():
        log(f"rehearsal: {line}")
    log(f"start-up checks: {checked} training stages' configs pass")
    compile_now = scale == "paper" and config.aot_target and not rehearse
    compiled = compile_stages(config, stages, log=log) if compile_now else []
    result = {
        "recipe": recipe.name,
        "scale": scale,
        "dry_run": True,
        "rehearse": rehearse,
        "checked": checked,
        "stages": [
            {"name": s.name, "kind": s.kind, **{k: str(v) for k, v in s.plan.items()}} for s in stages
        ],
        "compiled": compiled,
        "missing": recipe.missing(config),
    }
    log(result_line(result))
    return result


def stage_config(stage: Stage, base_model: str):
    """The ConfigDict a `dpo_jax.main` stage runs with, read from its own `--config=FILE:VARIANT` and
    `--config.<field>=value` arguments as `main` reads them (`command_line.read_config`: one parser, so a
    value the stage would refuse is refused here), its upstream model paths replaced by the base
    model's name (an SFT run's export has the base model's architecture: the compile is the same)."""
    from dpo_jax.config.command_line import read_config

    args = [
        field + "=" + base_model
        if field.startswith("--config.") and field.endswith("name_or_path") and value.startswith("{root}")
        else arg
        for arg in stage.command
        for field, _, value in [arg.partition("=")]
    ]
    try:
        return read_config(args)
    except UserError as error:
        raise UserError(f"stage {stage.name}: {error}") from None


# Fields that change no compiled program (a loss weight, the seed, PPO's KL coefficient, the reward
# model's path, logging...): dpo_jax.config.fields' table.
_SAME_PROGRAMS = entries_without(PROGRAMS)


def _program_fields(stage_cfg) -> dict[str, Any]:
    fields = stage_cfg.to_dict()
    for name in _SAME_PROGRAMS:
        *parents, leaf = name.split(".")
        tree = fields
        for parent in parents:
            tree = tree.get(parent, {})
        tree.pop(leaf, None)
    return fields


def compile_stages(config, stages: list[Stage], *, log=print) -> list[dict[str, Any]]:
    """Each training stage's programs (SFT, DPO, reward model, PPO's four) compiled for config.aot_target,
    then the evaluation's decode and scoring programs; stages with equal programs once."""
    from dpo_jax.perf.aot import CompilerOutOfMemory, compile_config, format_table
    from dpo_jax.perf.targets import get_target

    target = get_target(config.aot_target)
    base_model = None
    out, done = [], {}
    jobs = []
    for stage in (s for s in stages if s.aot):
        stage_cfg = stage_config(stage, base_model or "")
        if base_model is None:
            base_model = stage_cfg.model.name_or_path  # the first training stage starts from the base model
        jobs.append((stage.name, stage_cfg, "train"))
    if jobs:  # the sampling and scoring stages' programs at the evaluation's batch (`sampling` fields)
        jobs += [(f"evaluation ({program})", jobs[0][1], program) for program in ("sample", "score")]
    for name, stage_cfg, program in jobs:
        shape = json.dumps({"program": program, **_program_fields(stage_cfg)}, sort_keys=True, default=str)
        if shape in done:
            log(f"aot {name}: same programs as {done[shape]}")
            continue
        done[shape] = name
        try:
            results, advice = compile_config(stage_cfg, target, program=program)
        except ValueError as error:  # AotConfigError included: the mesh cannot be laid out on the target
            log(f"aot {name} on {target.name}: cannot compile: {error}")
            out.append({"stage": name, "target": target.name, "compiled": False, "error": str(error)})
            continue
        except CompilerOutOfMemory as error:  # the compiler's own verdict
            log(f"aot {name}: does not fit. {error}")
            out.append(
                {"stage": name, "target": target.name, "compiled": False, "fits": False, "error": str(error)}
            )
            continue
        log(f"aot {name} on {target.name}:")
        log(format_table(results))
        if advice:
            log(f"aot {name}: does not fit. {advice}")
        out.append(
            {
                "stage": name,
                "target": target.name,
                "compiled": True,
                "fits": advice is None,
                "programs": [r.get("program") for r in results],
            }
        )
    return out
