"""Metrics carried as (sum, count) pairs, and the helpers that build, merge and read them.

A metric is kept as the sum of a quantity over the examples that count and the number of those examples,
never as a mean: adding pairs is exact across gradient-accumulation steps, devices and hosts, whereas
averaging averages is wrong as soon as the parts hold different numbers of real examples. The helpers
work on jax arrays (inside jit) and on host numbers alike.
"""

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

SumCount = tuple[Any, Any]
Metrics = Mapping[str, SumCount]


def masked_sum_count(values, mask) -> SumCount:
    """(sum of `values` where `mask` is 1, number of such entries), both float32 scalars.

    Uses a select rather than a product so a nan or inf in a masked-out entry cannot leak into the sum.
    """
    mask = jnp.asarray(mask).astype(bool)
    values = jnp.asarray(values, dtype=jnp.float32)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    count = jnp.sum(mask, dtype=jnp.float32)
    return total, count


def merge_metrics(*parts: Metrics) -> dict[str, SumCount]:
    """Adds sums and counts name by name; a name missing from some parts is merged from those that have it."""
    merged: dict[str, SumCount] = {}
    for part in parts:
        for name, (total, count) in part.items():
            if name in merged:
                merged_total, merged_count = merged[name]
                merged[name] = (merged_total + total, merged_count + count)
            else:
                merged[name] = (total, count)
    return merged


def metrics_to_floats(metrics: Metrics, *, skip_empty: bool = False) -> dict[str, float]:
    """Turns (sum, count) pairs into Python floats sum / count.

    A metric with count 0 has no defined average: it becomes nan, or is left out when `skip_empty` is set
    (useful for logging, where a nan would break plots).
    """
    averages = {}
    for name, (total, count) in metrics.items():
        count = float(count)
        if count == 0:
            if not skip_empty:
                averages[name] = math.nan
            continue
        averages[name] = float(total) / count
    return averages
