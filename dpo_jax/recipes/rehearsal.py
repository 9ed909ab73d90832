"""A rehearsal of a paper-scale plan: `python -m dpo_jax.experiment --recipe=R --scale=paper --rehearse`.

It runs every stage of the paper-scale plan for real, with what only a machine the size of the paper's
can afford replaced, and nothing else:
- the models: each training stage runs its config's `:tiny` variant (a tiny random model, the tiny
  tokenizer), the classifier and the judge are the tiny stand-ins of --scale=tiny;
- the data: a paper-shaped copy made in DIR by the first stage (rehearsal_data.py: the real data sets'
  split names and orderings), read under the paper's split names;
- the counts: the recipe's `rehearsal` caps (steps, evaluation cadence, prompts, samples, tokens),
  each printed with its paper value.
The stages, their order, the grids, the prompt selection, the splits, the checkpoint cadence (capped),
the start-up checks and the report are the paper-scale plan's own.
"""

from __future__ import annotations

from typing import Any

from dpo_jax import UserError
from dpo_jax.recipes.base import command_stage
from dpo_jax.recipes.stages import REHEARSAL_DATA

# Substitutions every rehearsal makes where the recipe has the field: (field, rehearsal value).
STAND_INS = (("judge", "reward_model"), ("classifier", ""))


def rehearse(config, caps: dict[str, Any]) -> list[str]:
    """Set `config` (the paper-scale config) to rehearse; returns one line per replaced value."""
    if config.scale != "paper":
        raise UserError(f"--rehearse rehearses the paper-scale plan: use --scale=paper, not --scale={config.scale}")
    config.rehearse = True
    lines = []
    for field, value in (*STAND_INS, *caps.items()):
        if field not in config:
            continue
        before = config[field]
        config[field] = type(before)(value) if isinstance(before, tuple) else value
        if config[field] != before:
            lines.append(f"{field}: {_show(before)} at paper scale -> {_show(config[field])}")
    config.rehearsal = "; ".join(lines)
    return lines


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "()"
    return repr(value) if isinstance(value, str) else str(value)


def data_stage(config):
    """The first stage of a rehearsal: the paper-shaped data in DIR."""
    return command_stage(
        REHEARSAL_DATA,
        "dpo_jax.recipes.rehearsal_data",
        {"out": f"{{root}}/{REHEARSAL_DATA}", "seed": config.seed},
        kind="data",
        outputs={"data": f"{{root}}/{REHEARSAL_DATA}"},
        plan={"note": "paper-shaped copies of the shipped fixtures (rehearsal only)"},
    )
