"""What every recipe is made of: its config (the grid), its stages, its report; and shared builders.

A recipe is a `Recipe`: `config(scale)` gives the grid and settings as an ml_collections ConfigDict
(every field overridable as `--recipe.<field>=value`), `stages(config)` the ordered DAG of `Stage`s,
`report(config, root)` the figure and table from the finished stages. `missing` names the pieces a
recipe's figure needs that the package does not have yet (printed in the plan and the table).
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from dpo_jax import UserError
from dpo_jax.recipes.engine import Stage

SCALES = ("tiny", "paper")


@dataclasses.dataclass(frozen=True)
class Report:
    figure: str | None  # PNG path
    table: str  # Markdown path
    methods: list[str]  # the methods on the figure / in the table


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    figure: str  # which of the paper's figures or tables it reproduces
    config: Callable[[str], ml_collections.ConfigDict]
    stages: Callable[[ml_collections.ConfigDict], list[Stage]]
    report: Callable[[ml_collections.ConfigDict, Path], Report] | None
    missing: Callable[[ml_collections.ConfigDict], list[str]] = lambda config: []
    # --rehearse: the counts a rehearsal caps, {field: value} (recipes/rehearsal.py); None: a recipe whose
    # paper scale runs on any machine as it is (synthetic) has nothing to rehearse
    rehearsal: dict[str, Any] | None = None
    # The values the paper leaves uncertain ("(check)"): {field: source}, printed in the report.
    sources: Callable[[ml_collections.ConfigDict], dict[str, str]] = lambda config: {}
    # Why the recipe cannot run yet ("" = it can): its plan still prints with --dry_run.
    blocked: Callable[[ml_collections.ConfigDict], str] = lambda config: ""


def configs_dir(config) -> str:
    """The repository's configs/ directory (the stage commands name config files, as `main` does)."""
    directory = config.configs_dir or str(Path(__file__).resolve().parents[2] / "configs")
    if not os.path.isfile(os.path.join(directory, "common.py")):
        raise UserError(
            f"--recipe.configs_dir: {directory} is not dpo_jax's configs/ directory (no common.py); "
            "run from a checkout of the repository or pass its configs/ path"
        )
    return directory


def config_ref(config_file: str, variant: str) -> str:
    return f"{config_file}:{variant}" if variant else config_file


def main_stage(
    name: str, config_file: str, overrides: dict[str, Any], *, after=(), inputs=(), extra="", **kw
) -> Stage:
    """A `python -m dpo_jax.main` stage: `--config=FILE:VARIANT` plus `--config.<field>=value` overrides."""
    args = ["dpo_jax.main", f"--config={config_file}", f"--workdir={{root}}/{name}"]
    args += [f"--config.{field}={_flag_value(value)}" for field, value in overrides.items()]
    args += extra.split()
    return Stage(name, tuple(args), after=tuple(after), inputs=tuple(inputs), **kw)


def command_stage(name: str, module: str, flags: dict[str, Any], *, after=(), inputs=(), extra="", **kw):
    args = [module, *(f"--{flag}={_flag_value(value)}" for flag, value in flags.items()), *extra.split()]
    return Stage(name, tuple(args), after=tuple(after), inputs=tuple(inputs), **kw)


def _flag_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def parameter_label(value: float) -> str:
    """0.1 -> "0.1", 5.0 -> "5": a stage name part that reads as the number."""
    return f"{value:g}"


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[str], *, flag: str = "--recipe"
) -> None:
    """`field=value` strings onto a config; an unknown field or a wrong type is one error naming the flag."""
    for text in overrides:
        field, sep, raw = text.partition("=")
        if not sep:
            raise UserError(f"{flag}.{text}: expected {flag}.<field>=value")
        target, *parents = config, *field.split(".")[:-1]
        leaf = field.split(".")[-1]
        try:
            for parent in parents:
                target = target[parent]
            current = target[leaf]
        except (KeyError, AttributeError):
            known = ", ".join(sorted(config.keys()))
            raise UserError(f"{flag}.{field}: no such field (fields: {known})") from None
        target[leaf] = _parse_like(raw, current, f"{flag}.{field}")


def _parse_like(raw: str, current: Any, field: str) -> Any:
    if isinstance(current, str):
        return raw
    if isinstance(current, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise UserError(f"{field}={raw}: expected true or false")
        return raw.lower() in ("true", "1")
    try:
        value = ast.literal_eval(raw) if raw else ()
    except (ValueError, SyntaxError):
        raise UserError(f"{field}={raw}: not a {type(current).__name__}") from None
    if isinstance(current, tuple):
        value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if current and not all(isinstance(v, (int, float)) for v in value):
            raise UserError(f"{field}={raw}: expected numbers, comma separated")
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and not isinstance(current, bool):  # True is an int to Python, not to a user
        raise UserError(f"{field}={raw}: expected a {type(current).__name__}")
    if not isinstance(value, type(current)):
        raise UserError(f"{field}={raw}: expected a {type(current).__name__}")
    return value


def common_fields(config: ml_collections.ConfigDict, scale: str) -> None:
    config.scale = scale
    config.rehearse = False  # --rehearse: the paper-scale plan on tiny models (recipes/rehearsal.py)
    config.rehearsal = ""  # what the rehearsal replaced, one "field: paper -> rehearsal" per value
    config.configs_dir = ""  # "" = the repository's configs/ beside the package
    config.seed = 0
    # Extra arguments per stage kind, appended to its command line (e.g. --recipe.args.dpo="--config.learning_rate=1e-6").
    config.args = ml_collections.ConfigDict()
    config.launcher = (
        ""  # a command prefix for the training stages (launch/recipe_slurm_stage.sh: every node)
    )
    # On a multi-host slice every host runs the recipe: worker 0 leads (keeps the books, writes the
    # report), the others follow it (recipes.engine.Runner); `session` names one launch of them all.
    config.worker = 0
    config.session = ""
    config.compilation_cache = True  # stages share JAX's compilation cache in DIR/.compilation_cache
    config.aot_target = "v5e-8"  # --dry_run --scale=paper compiles each training stage for this target
