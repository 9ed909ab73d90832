"""Command line for one step of the synthetic recipe (dpo_jax/synthetic/sweep.py), one directory each.

    python -m dpo_jax.synthetic.steps --step=sft --config=configs/synthetic.py --workdir=DIR/sft
    python -m dpo_jax.synthetic.steps --step=pairs --config=configs/synthetic.py --workdir=DIR/pairs_16 \\
        --sft=DIR/sft --config.synthetic.pairs_per_prompt=16
    python -m dpo_jax.synthetic.steps --step=dpo ... --sft=DIR/sft --pairs=DIR/pairs_16 --config.beta=0.1
    python -m dpo_jax.synthetic.steps --step=controls ... --sft=DIR/sft --pairs=DIR/pairs_4,DIR/pairs_16
    python -m dpo_jax.synthetic.steps --step=evaluate ... --sft=DIR/sft --runs=DIR/dpo_a,DIR/dpo_b

`python -m dpo_jax.experiment --recipe=synthetic` runs them in order and reuses finished ones.
Exit status as `dpo_jax.main`: 0 done, 2 a mistake in the command line (one line on stderr), 75
preempted after saving (rerun to resume), 1 anything else.
"""

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from dpo_jax import UserError, parse_flags_or_exit, report_user_errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/synthetic.py[:tiny]")
_STEP = flags.DEFINE_enum("step", None, ["sft", "pairs", "dpo", "controls", "evaluate"], "Which step.")
_WORKDIR = flags.DEFINE_string("workdir", None, "This step's directory.")
_SFT = flags.DEFINE_string("sft", "", "The sft step's directory (pi_ref and its tables).")
_PAIRS = flags.DEFINE_list("pairs", [], "Pair-set directories (dpo: one; controls: any).")
_RUNS = flags.DEFINE_list("runs", [], "evaluate: the DPO runs' directories.")
_VARIANT = flags.DEFINE_string("variant", "", "dpo: the optimisation variation's name ('' = default).")
_TRAIN_EVAL = flags.DEFINE_integer("train_eval_prompts", 256, "Pair prompts the controls live on.")
_POPULATION = flags.DEFINE_integer("population_prompts", 8, "Pair prompts of the population control.")
_TABULAR_LR = flags.DEFINE_float("tabular_learning_rate", 0.05, "Tabular control: step, in units of its stability limit / 2.")
_TABULAR_STEPS = flags.DEFINE_integer("tabular_steps", 5000, "Tabular control: full-batch steps.")
flags.mark_flags_as_required(["config", "step", "workdir"])


def _needs(value, flag: str):
    if not value:
        raise UserError(f"command line: --step={_STEP.value} needs --{flag}")
    return value


@report_user_errors
def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("dpo_jax").setLevel(logging.INFO)
    from dpo_jax.checkpoint import PREEMPTED_EXIT
    from dpo_jax.run import Preempted
    from dpo_jax.synthetic import sweep

    config, workdir, step = _CONFIG.value, _WORKDIR.value, _STEP.value
    try:
        if step == "sft":
            sweep.train_reference(config, workdir)
        elif step == "pairs":
            sweep.draw_pairs(config, _needs(_SFT.value, "sft"), workdir)
        elif step == "dpo":
            if len(_needs(_PAIRS.value, "pairs")) != 1:
                raise UserError(
                    f"command line: --step=dpo trains on one pair set, got --pairs={_PAIRS.value}"
                )
            sweep.train_dpo(
                config, _needs(_SFT.value, "sft"), _PAIRS.value[0], workdir, variant=_VARIANT.value
            )
        elif step == "controls":
            sweep.run_controls(
                config,
                _needs(_SFT.value, "sft"),
                _needs(_PAIRS.value, "pairs"),
                workdir,
                train_eval_prompts=_TRAIN_EVAL.value,
                population_prompts=_POPULATION.value,
                learning_rate=_TABULAR_LR.value,
                num_steps=_TABULAR_STEPS.value,
            )
        else:
            sweep.evaluate(
                config,
                _needs(_SFT.value, "sft"),
                _needs(_RUNS.value, "runs"),
                workdir,
                train_eval_prompts=_TRAIN_EVAL.value,
            )
    except Preempted:
        sys.exit(PREEMPTED_EXIT)
    except FileNotFoundError as error:
        raise UserError(f"--step={step}: {error}") from None


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags_or_exit)
