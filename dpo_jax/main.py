"""Command line: `python -m dpo_jax.main --config=configs/hh.py --workdir=DIR [--config.beta=0.5]`.

This file is intentionally short: flags, logging, the multi-host runtime, then the run the config
asks for: `training.train_and_evaluate` (one SFT, DPO or reward-model stage), `ppo.run_ppo_stage`
(`stage=ppo`), or the synthetic experiment
(`config.task == "synthetic_benchmark"`, several stages built on the trainer). Multi-host runs
(TPU pods, SLURM) call jax.distributed.initialize here, before any other JAX call; on a TPU VM it finds its peers by itself, elsewhere it reads
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.

Exit status: 0 finished; 2 a mistake in the command line, config, data or workdir (one line on
stderr); 75 (PREEMPTED_EXIT) stopped by SIGTERM after saving a checkpoint: rerun the same command to
resume; 1 anything else, e.g. non-finite losses (one line) or a bug (with its traceback).
"""

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from dpo_jax import UserError, parse_flags_or_exit, report_user_errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the exported model.")
_MULTIHOST = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "jax.distributed.initialize: auto = when the environment asks.",
)
_INIT_TIMEOUT = flags.DEFINE_integer("distributed_timeout_s", 300, "Seconds to wait for the other processes.")
flags.mark_flags_as_required(["config", "workdir"])


def _wants_distributed() -> bool:
    if _MULTIHOST.value != "auto":
        return _MULTIHOST.value == "on"
    return (
        bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
        or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")  # a multi-host TPU slice
        or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    )


def _initialize_distributed(jax) -> None:
    kwargs = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):  # explicit (SLURM script, local multi-process tests)
        kwargs = dict(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    jax.distributed.initialize(initialization_timeout=_INIT_TIMEOUT.value, **kwargs)


@report_user_errors
def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Orbax and absl log every checkpoint step at INFO; keep the run's own log readable.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("dpo_jax").setLevel(logging.INFO)
    from dpo_jax.config.runtime import apply_device_memory_settings

    apply_device_memory_settings()
    import jax

    if _wants_distributed():
        _initialize_distributed(jax)
    try:
        config = _CONFIG.value
        task = config.get("task", "train")  # the first read: a placeholder raises it here
    except OSError as error:  # config_flags defers a config file that failed to load until it is read
        raise UserError(f"command line: --config: {' '.join(str(error).split())}") from None
    from dpo_jax.checkpoint import PREEMPTED_EXIT, CheckpointDiskFullError
    from dpo_jax.training import NonFiniteLossError, Preempted, train_and_evaluate

    try:
        if task == "synthetic_benchmark":
            from dpo_jax.synthetic.experiment import run_experiment

            run_experiment(config, _WORKDIR.value)
        elif config.stage == "ppo":  # rollouts and updates, not the trainer's loop over a dataset
            from dpo_jax.ppo import run_ppo_stage

            if run_ppo_stage(config, _WORKDIR.value).preempted:
                raise Preempted
        elif train_and_evaluate(config, _WORKDIR.value).preempted:
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
    app.run(main, flags_parser=parse_flags_or_exit)
