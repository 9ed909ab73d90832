"""Recipes: the paper's figures and tables as one resumable command each (`python -m dpo_jax.experiment`).

A recipe is a DAG of stages, each an ordinary run of a dpo_jax command writing its own workdir under
the recipe's DIR (engine.py: fingerprints, reuse, resume, supersede), built by the shared stage builders
(stages.py, win_rates.py) from a grid of config fields with the paper's values as defaults (base.py),
and a report that reads the stages' declared outputs and puts our figures beside the paper's (table.py,
paper.py). One module per recipe: imdb.py, tldr.py, hh.py, news.py, judge_agreement.py. Any of them
rehearses its paper-scale plan on tiny models with --scale=paper --rehearse (rehearsal.py).
"""

from dpo_jax import UserError
from dpo_jax.recipes.base import Recipe


def recipes() -> dict[str, Recipe]:
    from dpo_jax.recipes import hh, imdb, judge_agreement, news, tldr

    return {r.name: r for r in (imdb.RECIPE, tldr.RECIPE, hh.RECIPE, news.RECIPE, judge_agreement.RECIPE)}


def get_recipe(name: str) -> Recipe:
    known = recipes()
    if name not in known:
        raise UserError(f"--recipe={name}: no such recipe (recipes: {', '.join(known)})")
    return known[name]


__all__ = ["Recipe", "get_recipe", "recipes"]
