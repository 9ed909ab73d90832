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

from dpo_jax.config.command_line import parse_command, print_error, report_user_errors, run_command

FLAGS = (
    ("recipe", str, None, "imdb | tldr | hh | news | judge_agreement"),
    ("workdir", str, None, "The recipe's directory: one workdir per stage inside it."),
    ("scale", str, "tiny", "tiny models and fixtures, or the paper's"),
    ("dry_run", bool, False, "Print the plan (and compile, at paper scale); run nothing."),
    ("rehearse", bool, False, "With --scale=paper: run the paper-scale plan with tiny models, counts capped."),
)  # fmt: skip


def parse_args(argv):
    """The flags, and the `--recipe.<field>=value` overrides as `field=value` (`args.overrides`)."""
    return parse_command(
        "python -m dpo_jax.experiment", argv, FLAGS, doc=__doc__, choices=dict(scale=("tiny", "paper")),
        required=("recipe", "workdir"), overrides_of="recipe",
    )  # fmt: skip


@report_user_errors
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.dry_run:
        # Compiling for a target needs no accelerator (as `python -m dpo_jax.aot`); the stages of a
        # real run inherit the environment as it is. Set before anything imports jax.
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        from dpo_jax.config.runtime import apply_device_memory_settings

        apply_device_memory_settings()
    from dpo_jax.recipes import get_recipe
    from dpo_jax.recipes.engine import StageFailed
    from dpo_jax.recipes.run import plan, run_recipe

    recipe = get_recipe(args.recipe)
    if args.dry_run:
        plan(recipe, args.scale, args.workdir, args.overrides, rehearse=args.rehearse)
        return
    try:
        run_recipe(recipe, args.scale, args.workdir, args.overrides, rehearse=args.rehearse)
    except StageFailed as error:
        print_error(str(error))
        sys.exit(error.exit_status if error.exit_status == 75 else 1)


if __name__ == "__main__":
    run_command(main)
