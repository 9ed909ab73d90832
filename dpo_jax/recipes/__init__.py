"""Recipes: the paper's figures and tables as one resumable command each (`python -m dpo_jax.experiment`).

A recipe is a DAG of stages, each an ordinary run of a dpo_jax command writing its own workdir under
the recipe's DIR (engine.py: fingerprints, reuse, resume, supersede), a grid as config fields with
the paper's values as defaults (base.py), and a report that puts our figures beside the paper's
(table.py, paper.py). The recipes: imdb.py, and the plans in plans.py (tldr, hh, news,
judge_agreement).
"""

from dpo_jax import UserError
from dpo_jax.recipes.base import Recipe


def recipes() -> dict[str, Recipe]:
    from dpo_jax.recipes import imdb, plans, synthetic

    return {"imdb": imdb.RECIPE, **plans.RECIPES, "synthetic": synthetic.RECIPE}


def get_recipe(name: str) -> Recipe:
    known = recipes()
    if name not in known:
        raise UserError(f"--recipe={name}: no such recipe (recipes: {', '.join(known)})")
    return known[name]


__all__ = ["Recipe", "get_recipe", "recipes"]
