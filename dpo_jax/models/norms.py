"""Layer normalisation in float32 whose backward pass keeps only the input in its own dtype.

Plain autodiff of an fp32 layer norm saves the fp32 centred input `[tokens, D]` of every norm for the
backward pass: at Pythia-2.8B, micro-batch 8 x 2 x 512 tokens, two norms per layer, that is ~10 GB,
the difference between fitting an 80 GB H100 and XLA silently rematerialising. Here the backward
keeps the input (bf16 in training, alive anyway as the residual stream) and the per-token fp32 mean
and reciprocal standard deviation, and recomputes the normalised input in fp32: the same numbers
as autodiff to fp32 rounding (tests/models/test_norms.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _normalise(x, eps):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.square(x32 - mean).mean(-1, keepdims=True) + eps)
    return (x32 - mean) * rstd, mean, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x, scale, bias, eps: float, dtype):
    """`((x - mean) / sqrt(var + eps) * scale + bias)` over the last axis, in fp32, returned in `dtype`."""
    normalised, _, _ = _normalise(x, eps)
    return (normalised * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)


def _layer_norm_forward(x, scale, bias, eps, dtype):
    normalised, mean, rstd = _normalise(x, eps)
    y = (normalised * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)
    return y, (x, mean, rstd, scale, bias)


def _layer_norm_backward(eps, dtype, residuals, cotangent):
    del eps, dtype
    x, mean, rstd, scale, bias = residuals
    normalised = (x.astype(jnp.float32) - mean) * rstd
    dy = cotangent.astype(jnp.float32)
    token_axes = tuple(range(x.ndim - 1))
    scale_grad = jnp.sum(dy * normalised, axis=token_axes)
    bias_grad = jnp.sum(dy, axis=token_axes)
    g = dy * scale.astype(jnp.float32)
    x_grad = rstd * (g - g.mean(-1, keepdims=True) - normalised * (g * normalised).mean(-1, keepdims=True))
    return x_grad.astype(x.dtype), scale_grad.astype(scale.dtype), bias_grad.astype(bias.dtype)


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)
