"""Training: start-up checks, optimizer, sharded state, the pure train step, and the loop that runs a stage.

    from dpo_jax.training import train_and_evaluate
    train_and_evaluate(config, workdir)          # SFT or DPO on the config's dataset, resumable

`run_training(config, workdir, prepared)` trains on already prepared data (the synthetic experiment).
"""

from dpo_jax.training.loop import (
    FINISHED_MARKER,
    NonFiniteLossError,
    Preempted,
    TrainResult,
    run_training,
    train_and_evaluate,
)

__all__ = ["FINISHED_MARKER", "NonFiniteLossError", "Preempted", "TrainResult", "run_training", "train_and_evaluate"]
