import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpo_jax.run.state import TrainState


def make_state(seed=0):
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.5)}
    return TrainState.create(params=params, tx=optax.sgd(0.1), rng=seed)


def test_create_starts_at_step_zero_with_a_raw_uint32_key():
    state = make_state(seed=3)
    assert state.step.dtype == jnp.int32 and state.step.shape == () and int(state.step) == 0
    assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)
    np.testing.assert_array_equal(state.rng, jax.random.PRNGKey(3))


def test_apply_gradients_updates_params_and_step_under_jit():
    state = make_state()
    grads = {"w": jnp.array([1.0, -1.0]), "b": jnp.array(2.0)}
    new_state = jax.jit(TrainState.apply_gradients)(state, grads)
    np.testing.assert_allclose(new_state.params["w"], [0.9, 2.1], rtol=1e-6)
    np.testing.assert_allclose(new_state.params["b"], 0.3, rtol=1e-6)
    assert int(new_state.step) == 1
    assert new_state.tx is state.tx


def test_state_is_one_pytree_without_the_optimizer_object():
    leaves = jax.tree_util.tree_leaves(make_state())
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    # step, two params, rng; sgd without momentum keeps no arrays.
    assert len(leaves) == 4


def test_typed_keys_are_rejected():
    with pytest.raises(TypeError, match="raw uint32 key"):
        TrainState.create(params={}, tx=optax.sgd(0.1), rng=jax.random.key(0))
