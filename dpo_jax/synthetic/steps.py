"""Command line for one step of the synthetic recipe (dpo_jax/synthetic/sweep.py), one directory each.

    python -m dpo_jax.synthetic.steps --step=sft --config=configs/synthetic.py --workdir=DIR/sft
    python -m dpo_jax.synthetic.steps --step=pairs --config=configs/synthetic.py --workdir=DIR/pairs_16 \\
        --sft=DIR/sft --config.synthetic.pairs_per_prompt=16
    python -m dpo_jax.synthetic.steps --step=dpo ... --sft=DIR/sft --pairs=DIR/pairs_16 --config.beta=0.1
    python -m dpo_jax.synthetic.steps --step=controls ... --sft=DIR/sft --pairs=DIR/pairs_4,DIR/pairs_16
    python -m dpo_jax.synthetic.steps --step=evaluate ... --sft=DIR/sft --runs=DIR/dpo_a,DIR/dpo_b

The demo's own steps (dpo_jax/synthetic/demo.py):

    python -m dpo_jax.synthetic.steps --step=baseline --method=preferred_ft ... --sft=DIR/sft --pairs=DIR/pairs
    python -m dpo_jax.synthetic.steps --step=reward_model ... --sft=DIR/sft --pairs=DIR/pairs
    python -m dpo_jax.synthetic.steps --step=ppo --ppo_reward=learned --kl_coef=0.1 --reward_model=DIR/reward_model ...
    python -m dpo_jax.synthetic.steps --step=exact_eval ... --pairs=DIR/pairs --runs=DIR/dpo_beta_0.1,...

`python -m dpo_jax.experiment --recipe=synthetic` runs the sweep's in order and reuses finished ones;
`python -m dpo_jax.main --config=configs/synthetic.py` the demo's (dpo_jax/recipes/synthetic_demo.py).
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
STEPS = ["sft", "pairs", "dpo", "controls", "evaluate", "baseline", "reward_model", "ppo", "exact_eval"]
_STEP = flags.DEFINE_enum("step", None, STEPS, "Which step.")
_WORKDIR = flags.DEFINE_string("workdir", None, "This step's directory.")
_SFT = flags.DEFINE_string("sft", "", "The sft step's directory (pi_ref and its tables).")
_PAIRS = flags.DEFINE_list("pairs", [], "Pair-set directories (dpo: one; controls: any).")
_RUNS = flags.DEFINE_list("runs", [], "evaluate, exact_eval: the policies' directories.")
_METHOD = flags.DEFINE_string("method", "", "baseline: preferred_ft or unlikelihood.")
_REWARD_MODEL = flags.DEFINE_string("reward_model", "", "ppo (learned reward), exact_eval: its directory.")
_PPO_REWARD = flags.DEFINE_enum("ppo_reward", "true", ["true", "learned"], "ppo: the reward it maximises.")
_KL_COEF = flags.DEFINE_float("kl_coef", None, "ppo: the KL coefficient.")
_VARIANT = flags.DEFINE_string("variant", "", "dpo: the optimisation variation's name ('' = default).")
_TRAIN_EVAL = flags.DEFINE_integer("train_eval_prompts", 256, "Pair prompts the controls live on.")
_POPULATION = flags.DEFINE_integer("population_prompts", 8, "Pair prompts of the population control.")
_TABULAR_LR = flags.DEFINE_float(
    "tabular_learning_rate", 0.05, "Tabular control: step, in units of its stability limit / 2."
)
_TABULAR_STEPS = flags.DEFINE_integer("tabular_steps", 5000, "Tabular control: full-batch steps.")
flags.mark_flags_as_required(["config", "step", "workdir"])


def _needs(value, flag: str):
    if not value:
        raise UserError(f"command line: --step={_STEP.value} needs --{flag}")
    return value


def _one_pair_set() -> str:
    if len(_needs(_PAIRS.value, "pairs")) != 1:
        raise UserError(
            f"command line: --step={_STEP.value} trains on one pair set, got --pairs={_PAIRS.value}"
        )
    return _PAIRS.value[0]


@report_user_errors
def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("dpo_jax").setLevel(logging.INFO)
    from dpo_jax.checkpoint import PREEMPTED_EXIT
    from dpo_jax.run import Preempted
    from dpo_jax.synthetic import demo, sweep

    config, workdir, step = _CONFIG.value, _WORKDIR.value, _STEP.value
    try:
        if step == "sft":
            sweep.train_reference(config, workdir)
        elif step == "pairs":
            sweep.draw_pairs(config, _needs(_SFT.value, "sft"), workdir)
        elif step == "dpo":
            sweep.train_dpo(
                config, _needs(_SFT.value, "sft"), _one_pair_set(), workdir, variant=_VARIANT.value
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
        elif step in ("baseline", "reward_model"):
            sft, pairs = _needs(_SFT.value, "sft"), _one_pair_set()
            if step == "baseline":
                demo.train_baseline(config, _needs(_METHOD.value, "method"), sft, pairs, workdir)
            else:
                demo.train_reward_model(config, sft, pairs, workdir)
        elif step == "ppo":
            demo.train_ppo(
                config,
                _needs(_SFT.value, "sft"),
                workdir,
                reward=_PPO_REWARD.value,
                kl_coef=_needs(_KL_COEF.value is not None, "kl_coef") and _KL_COEF.value,
                reward_model_dir=_REWARD_MODEL.value,
            )
        elif step == "exact_eval":
            demo.evaluate_demo(
                config,
                _one_pair_set(),
                _needs(_RUNS.value, "runs"),
                workdir,
                reward_model_dir=_REWARD_MODEL.value,
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
