"""PPO's sizes as RLHF papers and TRL state them, mapped onto the run's config, and the start-up checks of
the settings this module and `kl_control` add.

    rollout batch      config.global_batch_size   prompts sampled, scored and trained on per PPO step
    minibatch          config.ppo.minibatch_size  prompts per optimizer update (0: global_batch_size /
                                                  config.ppo.num_minibatches); when set, it decides the
                                                  number of minibatches
    PPO epochs         config.ppo.num_epochs      passes over each rollout batch
    steps              config.num_train_steps     rollout batches

So TRL's (batch_size=B, mini_batch_size=M, ppo_epochs=E) is `global_batch_size=B, ppo.minibatch_size=M,
ppo.num_epochs=E`: B / M * E optimizer updates per rollout.
"""

from __future__ import annotations

import logging

from dpo_jax import UserError
from dpo_jax.ppo.kl_control import validate_kl_settings

logger = logging.getLogger("dpo_jax")


def resolve_ppo_sizes(config):
    """`config` with `ppo.num_minibatches` following `ppo.minibatch_size` when that is set (a copy; the
    caller's config is left as it was); UserError for sizes that do not divide."""
    validate_kl_settings(config.ppo)
    size = config.ppo.get("minibatch_size", 0) or 0
    batch = config.global_batch_size
    if not size:
        return config
    if not (isinstance(size, int) and 0 < size <= batch and batch % size == 0):
        raise UserError(
            f"config.ppo.minibatch_size={size!r} must be a positive divisor of config.global_batch_size={batch} "
            "(the prompts of one rollout batch)"
        )
    resolved = config.copy_and_resolve_references()
    resolved.ppo.num_minibatches = batch // size
    logger.info(
        "PPO: rollout batches of %d prompts, %d minibatches of %d (config.ppo.minibatch_size), %d epochs",
        batch,
        batch // size,
        size,
        config.ppo.num_epochs,
    )
    return resolved
