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

from absl import logging as absl_logging

from dpo_jax import UserError
from dpo_jax.config.command_line import CONFIG_FILE, parse_command, report_user_errors, run_command

FLAGS = (
    ("config", CONFIG_FILE, None, "configs/synthetic.py[:tiny]"),
    ("step", str, None, "Which step."),
    ("workdir", str, None, "This step's directory."),
    ("sft", str, "", "The sft step's directory (pi_ref and its tables)."),
    ("pairs", list, [], "Pair-set directories (dpo: one; controls: any)."),
    ("runs", list, [], "evaluate, exact_eval: the policies' directories."),
    ("method", str, "", "baseline: preferred_ft or unlikelihood."),
    ("reward_model", str, "", "ppo (learned reward), exact_eval: its directory."),
    ("ppo_reward", str, "true", "ppo: the reward it maximises."),
    ("kl_coef", float, None, "ppo: the KL coefficient."),
    ("variant", str, "", "dpo: the optimisation variation's name ('' = default)."),
    ("train_eval_prompts", int, 256, "Pair prompts the controls live on."),
    ("population_prompts", int, 8, "Pair prompts of the population control."),
    ("tabular_learning_rate", float, 0.05, "Tabular control: step, in units of its stability limit / 2."),
    ("tabular_steps", int, 5000, "Tabular control: full-batch steps."),
)
STEPS = ("sft", "pairs", "dpo", "controls", "evaluate", "baseline", "reward_model", "ppo", "exact_eval")


def parse_args(argv):
    return parse_command(
        "python -m dpo_jax.synthetic.steps", argv, FLAGS, doc=__doc__,
        choices=dict(step=STEPS, ppo_reward=("true", "learned")), required=("config", "step", "workdir"),
    )  # fmt: skip


def _needs(args, flag: str):
    if getattr(args, flag) in (None, "", []):
        raise UserError(f"command line: --step={args.step} needs --{flag}")
    return getattr(args, flag)


def _one_pair_set(args) -> str:
    if len(_needs(args, "pairs")) != 1:
        raise UserError(f"command line: --step={args.step} trains on one pair set, got --pairs={args.pairs}")
    return args.pairs[0]


@report_user_errors
def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("dpo_jax").setLevel(logging.INFO)
    from dpo_jax.checkpoint import PREEMPTED_EXIT
    from dpo_jax.run import Preempted
    from dpo_jax.synthetic import demo, sweep

    config, workdir, step = args.config, args.workdir, args.step
    controls = dict(train_eval_prompts=args.train_eval_prompts)
    try:
        if step == "sft":
            sweep.train_reference(config, workdir)
        elif step == "pairs":
            sweep.draw_pairs(config, _needs(args, "sft"), workdir)
        elif step == "dpo":
            sweep.train_dpo(config, _needs(args, "sft"), _one_pair_set(args), workdir, variant=args.variant)
        elif step == "controls":
            sweep.run_controls(
                config, _needs(args, "sft"), _needs(args, "pairs"), workdir, **controls,
                population_prompts=args.population_prompts, learning_rate=args.tabular_learning_rate,
                num_steps=args.tabular_steps,
            )  # fmt: skip
        elif step == "baseline":
            demo.train_baseline(
                config, _needs(args, "method"), _needs(args, "sft"), _one_pair_set(args), workdir
            )
        elif step == "reward_model":
            demo.train_reward_model(config, _needs(args, "sft"), _one_pair_set(args), workdir)
        elif step == "ppo":
            demo.train_ppo(
                config, _needs(args, "sft"), workdir, reward=args.ppo_reward, kl_coef=_needs(args, "kl_coef"),
                reward_model_dir=args.reward_model,
            )  # fmt: skip
        elif step == "exact_eval":
            demo.evaluate_demo(
                config, _one_pair_set(args), _needs(args, "runs"), workdir, reward_model_dir=args.reward_model
            )
        else:
            sweep.evaluate(config, _needs(args, "sft"), _needs(args, "runs"), workdir, **controls)
    except Preempted:
        sys.exit(PREEMPTED_EXIT)
    except FileNotFoundError as error:
        raise UserError(f"--step={step}: {error}") from None


if __name__ == "__main__":
    run_command(main)
