"""Test tolerances derived from float32 error bounds, not from what one machine printed.

Two float32 programs that compute the same quantity by different code paths (another XLA fusion, a
reduction in another order, a vectorised transcendental on an AVX-512 CPU) agree only up to rounding:
each of the `terms` operations that feed a value can move it by one unit roundoff of the magnitudes
involved. `f32_bound` is that worst case, summed; a test compares with it, and a real bug (a wrong
mask, a missing term) is orders of magnitude above it on the small inputs the tests use.
Tests that compare the same computation run twice (a resume, the same program) stay bitwise exact.
"""

import jax
import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)


def f32_bound(magnitude, terms):
    """Worst-case absolute difference of two float32 evaluations of a `terms`-operation computation
    whose operands are at most `magnitude` in size (first-order bound: terms * eps * magnitude)."""
    return float(terms) * F32_EPS * float(np.max(np.abs(magnitude)))


def assert_f32_close(got, want, *, terms, magnitude=None, err_msg=""):
    """Every leaf of `got` within f32_bound(magnitude, terms) of `want`. The magnitude defaults to the
    leaf's largest |value|; pass the operands' size where the result is a cancelling difference."""

    def check(got_leaf, want_leaf):
        scale = np.max(np.abs(want_leaf)) if magnitude is None else magnitude
        np.testing.assert_allclose(
            np.asarray(got_leaf), np.asarray(want_leaf), rtol=0, atol=f32_bound(scale, terms), err_msg=err_msg
        )

    jax.tree_util.tree_map(check, got, want)


BF16_UNIT_ROUNDOFF = 2.0**-8  # bfloat16 keeps 8 significant bits: round-to-nearest moves a value by <= 2^-8 of it
# The bf16 roundings on one residual-stream layer's path that fp32 compute does not make (casts of the
# activations and weights into each projection, the projection outputs, the attention probabilities and
# the activation function's output): 3 per projection x (q/k/v, output, MLP in, MLP out) less the shared
# casts, counted generously.
BF16_ROUNDINGS_PER_LAYER = 8


def bf16_bound(magnitude, layers):
    """First-order bound on |bf16 compute - fp32 compute| of an output of size `magnitude` after `layers`
    layers that accumulate in fp32 and round their operands to bf16: each rounding moves the residual
    stream by at most BF16_UNIT_ROUNDOFF of its size, and layer norms keep that size from growing."""
    return float(layers) * BF16_ROUNDINGS_PER_LAYER * BF16_UNIT_ROUNDOFF * float(np.max(np.abs(magnitude)))
