"""Passes over a whole split without gradients: eval metrics, and precomputed reference log-probs.

Owns the eval and reference-log-prob step functions (the training loop jits them) and the passes over
a split. Both passes walk the split in order with `make_eval_batches` (filler rows carry
example_mask=0), build global arrays on the mesh and keep results on the devices until the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from dpo_jax.data import make_eval_batches
from dpo_jax.metrics import merge_metrics, metrics_to_floats
from dpo_jax.objectives import batch_loss, loss_options, reference_logps
from dpo_jax.sharding import gather_to_host, make_global_batch


def make_eval_step(apply_fn: Callable, config, *, has_reference: bool):
    """`eval_step(params, reference_params, batch) -> metrics` (sums; no gradients)."""
    options = loss_options(config)

    def eval_step(params, reference_params, batch):
        reference = reference_params if has_reference else None
        _, metrics = batch_loss(params, reference, batch, apply_fn=apply_fn, **options)
        return metrics

    return eval_step


def make_reference_logps_step(apply_fn: Callable, config):
    """`reference_logps_step(reference_params, batch) -> [B, K]` for precomputing in one pass."""

    def step(reference_params, batch):
        return reference_logps(
            reference_params, batch, apply_fn=apply_fn, length_normalize=config.length_normalize
        )

    return step


def _batches(prepared, batch_size: int, split: str):
    return make_eval_batches(
        prepared,
        global_batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        split=split,
    )


def evaluate(eval_step, params, reference, prepared, batch_size: int, mesh) -> dict[str, float]:
    """Average metrics over every eval example exactly once ({} when there is no eval split)."""
    if prepared.eval is None:
        return {}
    total = None
    for local in _batches(prepared, batch_size, "eval"):
        metrics = eval_step(params, reference, make_global_batch(local, mesh))
        total = metrics if total is None else merge_metrics(total, metrics)
    return {} if total is None else metrics_to_floats(jax.device_get(total), skip_empty=True)


def _split_reference_logps(step, reference, prepared, batch_size, mesh, split) -> np.ndarray:
    rows = [
        np.asarray(gather_to_host(step(reference, make_global_batch(local, mesh))))
        for local in _batches(prepared, batch_size, split)
    ]
    num_examples = getattr(prepared, split).num_examples
    return np.concatenate(rows)[:num_examples].astype(np.float32)


def precompute_reference_logps(prepared, apply_fn, reference, config, mesh, batch_size: int):
    """Reference log-probs [N, K] of every train and eval example, attached so batches carry them.

    After this the reference params are no longer needed: the step reads `batch["reference_logps"]`.
    """
    step = jax.jit(make_reference_logps_step(apply_fn, config))
    splits = {}
    for split in ("train", "eval"):
        data = getattr(prepared, split)
        if data is not None:
            logps = _split_reference_logps(step, reference, prepared, batch_size, mesh, split)
            splits[split] = data.with_extras(reference_logps=logps)
    return dataclasses.replace(prepared, **splits)
