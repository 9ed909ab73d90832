"""The train state every stage trains (SFT, DPO, the reward model, PPO's policy and value model), created
directly on the mesh, the frozen reference params beside it, and the in-graph skip of a non-finite update.

`TrainState` is one pytree (step, params, optimizer state, rng), so it can be sharded, donated to the
train step and checkpointed as one item. The frozen reference params are deliberately not part of it:
they have no optimizer state, are never donated and are not checkpointed with the policy.

Shardings come from the models' logical axis names without materialising anything
(eval_shape -> partition specs -> NamedSharding); host weights go straight to their shards and the
optimizer state is created by a jit whose outputs are already sharded. The reference shares the
policy's shardings, is cast to its own (bf16) dtype and carries no optimizer state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from dpo_jax.models import init_fn
from dpo_jax.models.config import as_dtype
from dpo_jax.sharding import abstract_sharded_state


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


def state_init_fn(model, tx: optax.GradientTransformation, seed: int):
    init_params = init_fn(model)

    def init(rng):
        return TrainState.create(params=init_params(rng), tx=tx, rng=jax.random.PRNGKey(seed + 1))

    return init


def create_train_state(model, host_params, tx, mesh, rules, *, seed: int):
    """-> (state, state_shardings, abstract_state): the state on the mesh and its restore target."""
    init = state_init_fn(model, tx, seed)
    rng = jax.random.PRNGKey(seed)
    abstract, shardings = abstract_sharded_state(init, rng, mesh, rules)
    params = jax.tree.map(
        lambda x, s, a: jax.device_put(jnp.asarray(x, a.dtype), s),
        host_params,
        shardings.params,
        abstract.params,
    )
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    state = TrainState(
        step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
        params=params,
        opt_state=opt_state,
        rng=jax.device_put(jax.random.PRNGKey(seed + 1), shardings.rng),
        tx=tx,
    )
    return state, shardings, abstract


def place_reference(host_or_device_params, param_shardings, dtype):
    """The frozen reference: cast to `dtype` and laid out like the policy's params."""
    target = as_dtype(dtype)
    # Shard first, then cast on the devices: no device ever holds a whole tensor it does not own.
    placed = jax.tree.map(jax.device_put, host_or_device_params, param_shardings)
    cast = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(target), p), out_shardings=param_shardings)
    return cast(placed)


def apply_if_finite(state, grads, finite):
    """The in-graph skip of a non-finite update, for every stage's step (the trainer's, PPO's): `state`
    with `grads` applied when `finite`, else the old params and optimizer state.

    Both nonfinite policies keep the old state ("stop" then also ends the run, `run.loop`); the step
    counter still advances so the data position moves past the bad batch.
    """
    updated = state.apply_gradients(grads=grads)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    return new_state.replace(step=updated.step)
