"""The policy's train state: one pytree of step, params, optimizer state and rng.

Being a single pytree lets it be sharded, donated to the train step and checkpointed as one item.
The frozen reference parameters are deliberately not part of it: they have no optimizer state, are
never donated and are not checkpointed with the policy.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """step (int32 scalar), params, opt_state, rng (a uint32 `jax.random.PRNGKey` array)."""

    step: jax.Array
    params: Any
    opt_state: Any
    # A raw uint32 key rather than a typed key array so that Orbax saves it like any other array.
    rng: jax.Array
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, params: Any, tx: optax.GradientTransformation, rng: int | jax.Array) -> TrainState:
        """Fresh state at step 0; `rng` is a seed or a uint32 key from `jax.random.PRNGKey`."""
        key = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            raise TypeError(
                f"TrainState.rng must be a raw uint32 key (jax.random.PRNGKey), got a typed key {key.dtype}."
            )
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=key,
            tx=tx,
        )

    def apply_gradients(self, grads: Any) -> TrainState:
        """One optimizer update; the step counter advances by one."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)

    def split_rng(self) -> tuple[TrainState, jax.Array]:
        """A fresh key for this step (dropout, sampling) and the state carrying the next one."""
        next_rng, step_key = jax.random.split(self.rng)
        return self.replace(rng=next_rng), step_key
