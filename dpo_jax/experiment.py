"""Command line: one of the paper's figures or tables as one resumable recipe of ordinary runs.

    python -m dpo_jax.experiment --recipe=imdb --workdir=/tmp/imdb [--scale=tiny|paper] [--dry_run] \\
        [--recipe.betas=0.1,0.5 --recipe.args.dpo="--config.learning_rate=1e-6" ...]

Each stage writes a normal workdir DIR/<stage>; a finished stage is reused, a killed one resumes from
its checkpoint, a changed one re-runs (and the recipe says what changed). Ends with one `RESULT {json}`
line: recipe, stages ({name, status: ran|reused, seconds}), figure, table, methods, reference_logps.
--dry_run prints the plan instead; at --scale=paper it also compiles each training stage for
--recipe.aot_target. --scale=paper --rehearse runs the paper-scale plan for real on tiny models and
paper-shaped data, step and sample counts capped (recipes/rehearsal.py). Recipes: imdb, tldr, hh,
news, judge_agreement (README, "Reproducing the paper"; docs/recipes.md).

Exit status: 0 done; 2 a mistake in the command line (one line on stderr); 75 a stage was preempted
after saving (rerun the same command); 1 a stage failed (the end of its log is printed).
"""

import os
import sys

from absl import app, flags

from dpo_jax import parse_flags_or_exit, report_user_errors

_RECIPE = flags.DEFINE_string("recipe", None, "imdb | tldr | hh | news | judge_agreement")
_WORKDIR = flags.DEFINE_string("workdir", None, "The recipe's directory: one workdir per stage inside it.")
_SCALE = flags.DEFINE_enum("scale", "tiny", ["tiny", "paper"], "tiny models and fixtures, or the paper's")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan (and compile, at paper scale); run nothing.")
_REHEARSE = flags.DEFINE_bool(
    "rehearse", False, "With --scale=paper: run the paper-scale plan with tiny models, counts capped."
)
flags.mark_flags_as_required(["recipe", "workdir"])

RECIPE_PREFIX = "--recipe."


def split_recipe_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without them, the `--recipe.<field>=value` overrides as `field=value`)."""
    rest = [a for a in argv if not a.startswith(RECIPE_PREFIX)]
    return rest, [a[len(RECIPE_PREFIX) :] for a in argv if a.startswith(RECIPE_PREFIX)]


_OVERRIDES: list[str] = []


def _parse(argv):
    rest, overrides = split_recipe_overrides(argv)
    _OVERRIDES[:] = overrides
    return parse_flags_or_exit(rest)


@report_user_errors
def main(argv):
    del argv
    if _DRY_RUN.value:
        # Compiling for a target needs no accelerator (as `python -m dpo_jax.aot`); the stages of a
        # real run inherit the environment as it is. Set before anything imports jax.
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        from dpo_jax.config.runtime import apply_device_memory_settings

        apply_device_memory_settings()
    from dpo_jax.recipes import get_recipe
    from dpo_jax.recipes.engine import StageFailed
    from dpo_jax.recipes.run import plan, run_recipe

    recipe = get_recipe(_RECIPE.value)
    if _DRY_RUN.value:
        plan(recipe, _SCALE.value, _WORKDIR.value, _OVERRIDES, rehearse=_REHEARSE.value)
        return
    try:
        run_recipe(recipe, _SCALE.value, _WORKDIR.value, _OVERRIDES, rehearse=_REHEARSE.value)
    except StageFailed as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_status if error.exit_status == 75 else 1)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
