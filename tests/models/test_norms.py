"""The memory-lean layer norm equals autodiff of the plain fp32 formula, in values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.models.norms import layer_norm


def plain_layer_norm(x, scale, bias, eps, dtype):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(jnp.square(x32 - mean).mean(-1, keepdims=True) + eps)
    return (y * scale + bias).astype(dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_autodiff(dtype):
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = (3.0 + 2.0 * jax.random.normal(keys[0], (2, 5, 24))).astype(dtype)
    scale = 1.0 + 0.1 * jax.random.normal(keys[1], (24,))
    bias = 0.1 * jax.random.normal(keys[2], (24,))
    weights = jax.random.normal(keys[3], (2, 5, 24))

    def loss(norm):
        return lambda x, s, b: jnp.sum(weights * jnp.tanh(norm(x, s, b, 1e-5, dtype).astype(jnp.float32)))

    got = jax.jit(jax.value_and_grad(loss(layer_norm), argnums=(0, 1, 2)))(x, scale, bias)
    want = jax.jit(jax.value_and_grad(loss(plain_layer_norm), argnums=(0, 1, 2)))(x, scale, bias)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    tolerance = 1e-5 if dtype == jnp.float32 else 1e-2  # bf16 input gradients round to 8 bits
    for g, w in zip(got[1], want[1]):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(
            np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=tolerance, atol=1e-5
        )


def test_backward_keeps_no_float32_copy_of_a_bf16_input():
    x = jnp.ones((4, 8, 32), jnp.bfloat16)
    _, backward = jax.vjp(lambda x: layer_norm(x, jnp.ones(32), jnp.zeros(32), 1e-5, jnp.bfloat16), x)
    full_size = [leaf.dtype for leaf in jax.tree.leaves(backward) if leaf.shape == x.shape]
    assert full_size == [jnp.bfloat16]
