"""Linear with a low-precision compute dtype: same values and gradients as plain autodiff, without
keeping the cast kernel alive from the forward to the backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.models.layers import _contract, contract_with_cast_kernel


def _plain(x, kernel, n):
    return _contract(x, kernel.astype(x.dtype), n)


@pytest.mark.parametrize("num_contract", [1, 2])
def test_cast_kernel_contraction_equals_plain_autodiff_bitwise(num_contract):
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x_shape, k_shape = ((3, 5, 8), (8, 2, 4)) if num_contract == 1 else ((3, 5, 2, 4), (2, 4, 6))
    x = jax.random.normal(kx, x_shape, jnp.float32).astype(jnp.bfloat16)
    kernel = jax.random.normal(kk, k_shape, jnp.float32)
    out_shape = jax.eval_shape(lambda a, b: _plain(a, b, num_contract), x, kernel).shape
    g = jax.random.normal(kg, out_shape, jnp.float32).astype(jnp.bfloat16)

    def loss(fn):
        return lambda a, b: jnp.sum(fn(a, b, num_contract).astype(jnp.float32) * g.astype(jnp.float32))

    ours = jax.jit(jax.value_and_grad(loss(contract_with_cast_kernel), argnums=(0, 1)))(x, kernel)
    plain = jax.jit(jax.value_and_grad(loss(_plain), argnums=(0, 1)))(x, kernel)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_backward_keeps_no_low_precision_copy_of_the_kernel():
    """The residuals saved for the backward pass: the fp32 kernel itself, never its bf16 cast."""
    x = jnp.ones((4, 8), jnp.bfloat16)
    kernel = jnp.ones((8, 16), jnp.float32)

    def residual_dtypes(fn):
        _, vjp = jax.vjp(lambda a, k: fn(a, k, 1), x, kernel)
        return sorted({(leaf.shape, str(leaf.dtype)) for leaf in jax.tree.leaves(vjp) if hasattr(leaf, "dtype")})

    assert ((8, 16), "bfloat16") in residual_dtypes(_plain)
    ours = residual_dtypes(contract_with_cast_kernel)
    assert ((8, 16), "bfloat16") not in ours
    assert ((8, 16), "float32") in ours
