"""(sum, count) metric helpers: merging parts of a batch reproduces the whole batch's averages."""

import math

import numpy as np

from dpo_jax.metrics import masked_sum_count, merge_metrics, metrics_to_floats
from dpo_jax.objectives.losses import preference_loss


def test_merging_two_halves_gives_the_full_batch_averages():
    rng = np.random.default_rng(0)
    policy = -rng.gamma(3.0, 4.0, size=(8, 2)).astype(np.float32)
    reference = -rng.gamma(3.0, 4.0, size=(8, 2)).astype(np.float32)
    # Uneven padding: averaging the two halves' averages would weight their rows wrongly.
    example_mask = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    _, full = preference_loss("dpo", policy, reference, beta=0.1, example_mask=example_mask)
    halves = [
        preference_loss("dpo", policy[rows], reference[rows], beta=0.1, example_mask=example_mask[rows])[1]
        for rows in (slice(0, 4), slice(4, 8))
    ]
    merged = metrics_to_floats(merge_metrics(*halves))
    expected = metrics_to_floats(full)
    assert merged.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(merged[name], value, rtol=1e-6, err_msg=name)
    mean_of_halves = np.mean([metrics_to_floats(half)["loss"] for half in halves])
    assert not np.isclose(mean_of_halves, expected["loss"], rtol=1e-3)


def test_merge_keeps_names_missing_from_some_parts():
    merged = merge_metrics({"a": (1.0, 2.0)}, {"a": (3.0, 1.0), "b": (5.0, 5.0)}, {})
    assert merged == {"a": (4.0, 3.0), "b": (5.0, 5.0)}
    assert merge_metrics() == {}


def test_empty_metrics_become_nan_or_are_skipped():
    metrics = {"loss": (6.0, 3.0), "rewards/chosen": (0.0, 0.0)}
    floats = metrics_to_floats(metrics)
    assert floats["loss"] == 2.0 and math.isnan(floats["rewards/chosen"])
    assert metrics_to_floats(metrics, skip_empty=True) == {"loss": 2.0}


def test_masked_sum_count_ignores_masked_entries_even_when_not_finite():
    total, count = masked_sum_count(np.array([1.0, np.nan, 2.5, np.inf]), np.array([1, 0, 1, 0]))
    assert float(total) == 3.5 and float(count) == 2.0
