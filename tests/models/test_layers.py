"""`project`: the same values and gradients as plain autodiff of `act(x) . kernel.astype(x.dtype)`,
bitwise, while the backward pass keeps only x and the fp32 kernel (no bf16 kernel copy, no activation
output)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.models.layers import _contract, activation_fn, project


def _plain(x, kernel, n, activation):
    act = activation_fn(activation) if activation else (lambda v: v)
    return _contract(act(x), kernel.astype(x.dtype), n)


CASES = [(1, None, jnp.bfloat16), (2, None, jnp.bfloat16), (1, "gelu_new", jnp.bfloat16), (1, "gelu", jnp.float32)]


@pytest.mark.parametrize("num_contract, activation, dtype", CASES)
def test_projection_equals_plain_autodiff_bitwise(num_contract, activation, dtype):
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x_shape, k_shape = ((3, 5, 8), (8, 2, 4)) if num_contract == 1 else ((3, 5, 2, 4), (2, 4, 6))
    x = jax.random.normal(kx, x_shape, jnp.float32).astype(dtype)
    kernel = jax.random.normal(kk, k_shape, jnp.float32)
    out_shape = jax.eval_shape(lambda a, b: _plain(a, b, num_contract, activation), x, kernel).shape
    g = jax.random.normal(kg, out_shape, jnp.float32)

    def loss(fn):
        return lambda a, b: jnp.sum(fn(a, b, num_contract, activation).astype(jnp.float32) * g)

    ours = jax.jit(jax.value_and_grad(loss(project), argnums=(0, 1)))(x, kernel)
    plain = jax.jit(jax.value_and_grad(loss(_plain), argnums=(0, 1)))(x, kernel)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def _saved(fn, activation):
    """(shape, dtype) of every array the backward pass keeps."""
    x = jnp.ones((4, 8), jnp.bfloat16)
    kernel = jnp.ones((8, 16), jnp.float32)
    _, vjp = jax.vjp(lambda a, k: fn(a, k, 1, activation), x, kernel)
    return sorted((leaf.shape, str(leaf.dtype)) for leaf in jax.tree.leaves(vjp) if hasattr(leaf, "dtype"))


def test_backward_keeps_neither_the_bf16_kernel_nor_the_activation_output():
    plain = _saved(_plain, "gelu_new")
    assert ((8, 16), "bfloat16") in plain  # the kernel's cast
    assert sum(shape == (4, 8) for shape, _ in plain) >= 2  # the activation's input and output
    ours = _saved(project, "gelu_new")
    assert ours == [((4, 8), "bfloat16"), ((8, 16), "float32")]
