"""Where a rollout's scores come from: `RewardFn(prompt_ids, prompt_mask, response_ids, response_mask)
-> [B] float32`, host arrays in, host array out.

A reward model (`reward_model_fn`: a `ScalarHeadModel`, its score at the last real token of prompt +
response) or any given function, e.g. the synthetic task's hidden true reward.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax import MissingInputError, UserError
from dpo_jax.models import abstract_params
from dpo_jax.models.loading import is_reward_model_dir, load_scalar_head_model
from dpo_jax.ppo.programs import jit_reward_score
from dpo_jax.sharding import (
    DEFAULT_LOGICAL_AXIS_RULES,
    gather_to_host,
    logical_to_mesh_shardings,
    make_global_batch,
)

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def reward_model_fn(model, params, mesh, rules=None) -> RewardFn:
    """A `RewardFn` scoring with a reward model whose params are (possibly sharded) on `mesh`."""
    score = jit_reward_score(model, mesh, DEFAULT_LOGICAL_AXIS_RULES if rules is None else rules)

    def reward(prompt_ids, prompt_mask, response_ids, response_mask):
        batch = {
            "input_ids": np.concatenate([prompt_ids, response_ids], axis=1).astype(np.int32),
            "attention_mask": np.concatenate([prompt_mask, response_mask], axis=1).astype(np.int32),
        }
        return np.asarray(gather_to_host(score(params, make_global_batch(batch, mesh))), np.float32)

    return reward


def check_reward_model(config) -> None:
    """UserError unless `config.ppo.reward_model` names a reward model (before anything is loaded)."""
    if not config.ppo.reward_model:
        raise UserError("config.ppo.reward_model is empty: PPO needs a reward model (or a reward function)")
    try:
        is_reward = is_reward_model_dir(config.ppo.reward_model)
    except UserError as error:  # e.g. a local directory that does not exist: name the field
        raise MissingInputError(f"config.ppo.reward_model: {error}") from None
    if not is_reward:
        # Anything else would load as a language model under a fresh random head: scores of noise.
        raise MissingInputError(
            f"config.ppo.reward_model={config.ppo.reward_model!r} is not a reward model: expected a "
            "stage=reward_model workdir or its export (config.json of a *ForSequenceClassification)"
        )


def load_reward_model_fn(config, mesh, rules) -> RewardFn:
    """The `RewardFn` of the reward model `config.ppo.reward_model` (an export or a reward_model workdir),
    its params laid out on the mesh by their logical axes like the policy's."""
    check_reward_model(config)
    model, host_params = load_scalar_head_model(
        config.model,
        param_dtype=config.reference.param_dtype,
        seed=config.seed,
        name_or_path=config.ppo.reward_model,
    )
    shardings = logical_to_mesh_shardings(abstract_params(model, boxed=True), mesh, rules)
    return reward_model_fn(model, jax.tree.map(jax.device_put, host_params, shardings), mesh, rules)


def as_float_scores(scores, num_rows: int) -> np.ndarray:
    """A reward function's output checked: [B] finite floats."""
    scores = np.asarray(jnp.asarray(scores), np.float32)
    if scores.shape != (num_rows,):
        raise ValueError(f"the reward function returned shape {scores.shape}; expected ({num_rows},)")
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            f"the reward function returned non-finite scores: {scores[~np.isfinite(scores)][:5]}"
        )
    return scores
