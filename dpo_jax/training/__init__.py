"""The SFT, DPO and reward-model stage: start-up checks, the pure train step, its programs, and the stage
it hands the run scaffold's loop (`dpo_jax.run`).

    from dpo_jax.training import train_and_evaluate
    train_and_evaluate(config, workdir)          # SFT or DPO on the config's dataset, resumable

`run_training(config, workdir, prepared)` trains on already prepared data (the synthetic experiment).
"""

from dpo_jax.training.loop import TrainResult, run_training, train_and_evaluate

__all__ = ["TrainResult", "run_training", "train_and_evaluate"]
