"""Passes over a whole split without gradients: eval metrics, and precomputed reference log-probs.

Owns the eval and reference-log-prob step functions (the trainer's program builder jits them) and the
passes: `evaluate` over the eval split, and the one reference log-prob pass (`reference_logps_pass`),
which the trainer runs over its splits and `bench` over its batch. The passes over a split walk it in
order with `make_eval_batches` (filler rows carry example_mask=0) and build global arrays on the mesh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from dpo_jax.data import make_eval_batches
from dpo_jax.data.packing import batch_layout
from dpo_jax.metrics import merge_metrics, metrics_to_floats
from dpo_jax.objectives import LossOptions, make_loss_fn, reference_logps
from dpo_jax.sharding import data_parallel_size, gather_to_host, make_global_batch, traced_in_context


def make_eval_step(apply_fn: Callable, loss_options: LossOptions, *, has_reference: bool):
    """`eval_step(params, reference_params, batch) -> metrics` (sums; no gradients)."""
    loss_fn = make_loss_fn(apply_fn, loss_options)

    def eval_step(params, reference_params, batch):
        reference = reference_params if has_reference else None
        return loss_fn(params, reference, batch)[1]

    return eval_step


def make_reference_logps_step(apply_fn: Callable, *, length_normalize: bool):
    """`reference_logps_step(reference_params, batch) -> [B, K]` for precomputing in one pass."""

    def step(reference_params, batch):
        return reference_logps(reference_params, batch, apply_fn=apply_fn, length_normalize=length_normalize)

    return step


def jit_eval_step(apply_fn: Callable, loss_options: LossOptions, mesh, rules, *, has_reference: bool):
    """The eval step jitted and traced inside the mesh and `rules` (activation constraints bind).

    Its input shardings are those of the arguments: the state's params and global batches.
    """
    return jax.jit(
        traced_in_context(make_eval_step(apply_fn, loss_options, has_reference=has_reference), mesh, rules)
    )


def jit_reference_logps_step(apply_fn: Callable, mesh, rules, *, length_normalize: bool):
    """The reference log-prob step, jitted like `jit_eval_step`."""
    step = make_reference_logps_step(apply_fn, length_normalize=length_normalize)
    return jax.jit(traced_in_context(step, mesh, rules))


def _batches(prepared, batch_size: int, split: str, layout):
    return make_eval_batches(
        prepared,
        global_batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        split=split,
        layout=layout,
    )


def pass_layout(config, mesh):
    """The row layout of the passes without gradients: the training one, rows divided over the data axes."""
    return batch_layout(config.data, stage=config.stage, row_multiple=data_parallel_size(mesh))


def evaluate(eval_step, params, reference, prepared, batch_size: int, mesh, layout=None) -> dict[str, float]:
    """Average metrics over every eval example exactly once ({} when there is no eval split)."""
    if prepared.eval is None:
        return {}
    total = None
    for local in _batches(prepared, batch_size, "eval", layout):
        metrics = eval_step(params, reference, make_global_batch(local, mesh))
        total = metrics if total is None else merge_metrics(total, metrics)
    return {} if total is None else metrics_to_floats(jax.device_get(total), skip_empty=True)


def reference_logps_pass(step, reference, batches, num_examples: int, mesh, *, what: str = "") -> np.ndarray:
    """The one reference log-prob pass: [N, K] log-probs of the `num_examples` examples that the local
    `batches` (this process's rows, each with `example_index`, -1 on filler rows) hold, by the jitted
    reference log-prob program `step` (`jit_reference_logps_step`). The trainer's precomputation runs it
    over a split, `bench` over its one batch.

    Each value is put on its example by the batch's `example_index`, never by its global row: on a
    multi-host mesh whose devices are not in process order, global row j of a batch built from
    per-process rows is not example j (and packed rows hold several).
    """
    logps, filled = None, np.zeros(num_examples, np.int64)
    for local in batches:
        batch = make_global_batch(local, mesh)
        values, index = gather_to_host((step(reference, batch), batch["example_index"]))
        real = index >= 0
        if logps is None:
            logps = np.zeros((num_examples, values.shape[-1]), np.float32)  # [B, K] or [R, S, K] values
        logps[index[real]] = values[real]
        np.add.at(filled, index[real], 1)
    if logps is None or not (filled == 1).all():
        raise AssertionError(
            f"reference log-probs{what}: {int((filled == 0).sum())} examples got none and "
            f"{int((filled > 1).sum())} more than one"
        )
    return logps


def precompute_reference_logps(prepared, step, reference, config, mesh, batch_size: int):
    """Reference log-probs [N, K] of every train and eval example, attached so batches carry them;
    `step` is the jitted reference log-prob program (`jit_reference_logps_step`).

    After this the reference params are no longer needed: the step reads `batch["reference_logps"]`.
    The pass lays examples out as training does (`data.share_prompt`, `data.pack`).
    """
    layout = pass_layout(config, mesh)
    splits = {}
    for split in ("train", "eval"):
        data = getattr(prepared, split)
        if data is not None:
            batches = _batches(prepared, batch_size, split, layout)
            logps = reference_logps_pass(
                step, reference, batches, data.num_examples, mesh, what=f" of the {split} split"
            )
            splits[split] = data.with_extras(reference_logps=logps)
    return dataclasses.replace(prepared, **splits)
