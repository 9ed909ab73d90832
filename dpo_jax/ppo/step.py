"""The PPO update on one minibatch of rollout targets: clipped policy loss + vf_coef * clipped value loss
- entropy_coef * entropy, one optimizer step on the policy and value params together.

Like the trainer's step, it is pure, jitted once with the state's shardings and the state donated,
and a non-finite loss or gradient never reaches the params (the update is skipped in-graph and the
step reports `nonfinite=1`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dpo_jax.objectives.ppo import clipped_policy_loss, clipped_value_loss, masked_mean, token_entropy
from dpo_jax.ppo.rollout import policy_outputs
from dpo_jax.run.state import apply_if_finite
from dpo_jax.sharding import batch_sharding, traced_in_context

# The rollout target arrays one minibatch carries into the update.
MINIBATCH_KEYS = (
    "input_ids",
    "attention_mask",
    "response_ids",
    "response_mask",
    "old_logps",
    "old_values",
    "advantages",
    "returns",
)


def make_ppo_update(apply_fn, settings, prompt_length: int):
    """`update(state, minibatch) -> (state, metrics)`; metrics are (value, 1) pairs of float32 scalars."""

    def loss_fn(params, minibatch):
        mask = minibatch["response_mask"].astype(jnp.float32)
        logps, logits, values = policy_outputs(apply_fn, params, minibatch, prompt_length)
        policy_loss, clip_fraction, approx_kl = clipped_policy_loss(
            logps, minibatch["old_logps"], minibatch["advantages"], mask, clip_range=settings.clip_range
        )
        value_loss, value_clip_fraction = clipped_value_loss(
            values, minibatch["old_values"], minibatch["returns"], mask, clip_range=settings.value_clip_range
        )
        entropy = masked_mean(token_entropy(logits), mask)
        loss = policy_loss + settings.vf_coef * value_loss - settings.entropy_coef * entropy
        metrics = {
            "ppo/loss": loss,
            "ppo/policy_loss": policy_loss,
            "ppo/value_loss": value_loss,
            "ppo/entropy": entropy,
            "ppo/clip_fraction": clip_fraction,
            "ppo/value_clip_fraction": value_clip_fraction,
            "ppo/approx_kl": approx_kl,
            "ppo/value_error": masked_mean(jnp.square(values - minibatch["returns"]), mask),
        }
        return loss, metrics

    def update(state, minibatch):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, minibatch)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new_state = apply_if_finite(state, grads, finite)
        metrics = dict(metrics, **{"ppo/grad_norm": grad_norm, "nonfinite": 1.0 - finite.astype(jnp.float32)})
        # (sum, count) pairs, like every stage's step metrics: the run's loop merges them over its log interval.
        one = jnp.ones((), jnp.float32)
        return new_state, {name: (value.astype(jnp.float32), one) for name, value in metrics.items()}

    return update


def jit_ppo_update(apply_fn, settings, prompt_length: int, state_shardings, mesh, rules):
    """`make_ppo_update` jitted with the state's shardings (donated) and minibatch rows over the data
    axes, traced inside the mesh and `rules` so the models' activation constraints take effect."""
    minibatch_shardings = {key: batch_sharding(mesh, 2) for key in MINIBATCH_KEYS}
    return jax.jit(
        traced_in_context(make_ppo_update(apply_fn, settings, prompt_length), mesh, rules),
        in_shardings=(state_shardings, minibatch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )
