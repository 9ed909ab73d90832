"""Command line: one training run (SFT, DPO, a reward model, PPO) from a config, in a workdir.

    python -m dpo_jax.main --config=configs/hh.py:sft,tiny --workdir=/tmp/sft    # CPU-sized, seconds
    python -m dpo_jax.main --config=configs/hh.py --workdir=/tmp/hh-dpo --config.beta=0.5

Configs (run from the repository root): configs/hh.py, tldr.py, imdb.py, synthetic.py. After the
path, comma-separated variants: sft (the SFT stage instead of DPO), tiny (a tiny random model, the
tiny tokenizer and the shipped fixtures: runs on a CPU), neox (with tiny: a GPT-NeoX model instead
of GPT-2), gptj (with tiny: a GPT-J model), pythia (tldr.py: Pythia-2.8B instead of the paper's GPT-J),
precompute (reference log-probs computed once before training); synthetic.py takes tiny and rlhf. Any field can be overridden with --config.<field>=<value>; a typo fails at start-up.

This file is intentionally short: flags (one table, `config.command_line`), logging, the multi-host runtime, then the run the config
asks for: `training.train_and_evaluate` (one SFT, DPO or reward-model stage), `ppo.run_ppo_stage`
(`stage=ppo`), or the synthetic demo's stages on the recipe engine (`config.task ==
"synthetic_benchmark"`, dpo_jax/recipes/synthetic_demo.py: each stage its own process). Multi-host runs
(TPU pods, SLURM) call jax.distributed.initialize here, before any other JAX call (--distributed).

Exit status: 0 finished; 2 a mistake in the command line, config, data or workdir (one line on
stderr); 75 (PREEMPTED_EXIT) stopped by SIGTERM after saving a checkpoint: rerun the same command to
resume; 1 anything else, e.g. non-finite losses (one line) or a bug (with its traceback).
"""

import logging
import sys

from absl import logging as absl_logging

from dpo_jax import UserError
from dpo_jax.config.command_line import (
    CONFIG_FILE,
    parse_command,
    print_error,
    report_user_errors,
    run_command,
)
from dpo_jax.config.runtime import (
    DISTRIBUTED_CHOICES,
    DISTRIBUTED_FLAGS,
    apply_device_memory_settings,
    initialize_distributed,
)

FLAGS = (
    ("config", CONFIG_FILE, None, "Path to a config file (configs/*.py[:variant])."),
    ("workdir", str, None, "Directory for checkpoints, metrics and the exported model."),
    *DISTRIBUTED_FLAGS,
)


def parse_args(argv):
    return parse_command(
        "python -m dpo_jax.main",
        argv,
        FLAGS,
        doc=__doc__,
        choices=DISTRIBUTED_CHOICES,
        required=("config", "workdir"),
    )


@report_user_errors
def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Orbax and absl log every checkpoint step at INFO; keep the run's own log readable.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("dpo_jax").setLevel(logging.INFO)
    apply_device_memory_settings()
    distributed = initialize_distributed(args.distributed, args.distributed_timeout_s)
    config, workdir = args.config, args.workdir
    task = config.get("task", "train")  # the first read: a placeholder raises it here
    from dpo_jax.checkpoint import PREEMPTED_EXIT, CheckpointDiskFullError
    from dpo_jax.run import NonFiniteLossError, Preempted
    from dpo_jax.training import train_and_evaluate

    try:
        if task == "synthetic_benchmark":  # its stages, each a command, on the recipe engine
            if distributed:
                raise UserError(
                    "the synthetic demo runs on one host (its stages are CPU-sized): --distributed=off"
                )
            from dpo_jax.recipes.engine import StageFailed
            from dpo_jax.recipes.synthetic_demo import run_demo

            try:  # the config file as given (FILE:VARIANT): each stage reads it with its own overrides
                run_demo(config, workdir, args.config_ref)
            except StageFailed as error:
                print_error(error)
                sys.exit(error.exit_status if error.exit_status == PREEMPTED_EXIT else 1)
        elif config.stage == "ppo":  # rollouts and updates, not the trainer's loop over a dataset
            from dpo_jax.ppo import run_ppo_stage

            if run_ppo_stage(config, workdir).preempted:
                raise Preempted
        elif train_and_evaluate(config, workdir).preempted:
            raise Preempted
    except Preempted:
        sys.exit(PREEMPTED_EXIT)
    except (
        NonFiniteLossError,
        CheckpointDiskFullError,
    ) as error:  # the run failed, not the code: no traceback
        logging.getLogger("dpo_jax").error("%s", error)
        sys.exit(1)


if __name__ == "__main__":
    run_command(main)
