"""Metrics: (sum, count) pairs that average exactly across steps, devices and hosts (`sums`), and where
they are written with throughput figures (`writer`)."""

from dpo_jax.metrics.sums import Metrics, SumCount, masked_sum_count, merge_metrics, metrics_to_floats

__all__ = ["Metrics", "SumCount", "masked_sum_count", "merge_metrics", "metrics_to_floats"]
