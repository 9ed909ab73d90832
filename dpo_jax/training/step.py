"""The pure train and eval steps: (state, reference params, global batch) -> (new state, metrics).

One function, jitted once with shardings by the loop. The global batch is split into
`grad_accum_steps` micro-batches scanned in sequence; gradients and metrics are carried as sums
and divided once by the number of real examples, so accumulation, devices and hosts average
exactly. A non-finite loss or gradient never reaches the parameters: the update is skipped
in-graph and the step reports `nonfinite=1` for the loop to act on.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from dpo_jax.metrics import merge_metrics
from dpo_jax.models.attention import RightPadded, RowMask
from dpo_jax.objectives import HiddenStates, LossOptions, make_loss_fn
from dpo_jax.run.state import apply_if_finite
from dpo_jax.sharding import batch_sharding, traced_in_context
from dpo_jax.training.checks import loss_options_from_config


def split_micro_batches(batch: dict, num_micro: int) -> dict:
    """[B, ...] -> [num_micro, B / num_micro, ...] taking every num_micro-th row.

    Strided rather than contiguous so that each micro-batch draws equally from every device's
    shard of the batch dimension: no data moves between devices.
    """

    def split(x):
        rows = x.shape[0] // num_micro
        return jnp.swapaxes(x.reshape(rows, num_micro, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    apply_fn: Callable, config, *, has_reference: bool, loss_options: LossOptions | None = None
):
    """Build `train_step(state, reference_params, batch) -> (state, metrics)` for this config
    (`loss_options`: the objective, default the config's)."""
    num_micro = config.grad_accum_steps
    loss_fn = make_loss_fn(apply_fn, loss_options or loss_options_from_config(config))
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, reference_params, batch):
        reference = reference_params if has_reference else None
        micro_batches = split_micro_batches(batch, num_micro)

        def accumulate(carry, micro_batch):
            grad_sum, metric_sum = carry
            (_, metrics), grads = grad_fn(state.params, reference, micro_batch)
            grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
            return (grad_sum, merge_metrics(metric_sum, metrics)), None

        zero_grads = jax.tree.map(jnp.zeros_like, state.params)
        first = jax.tree.map(lambda x: x[0], micro_batches)
        metric_zeros = jax.tree.map(
            jnp.zeros_like, jax.eval_shape(lambda: loss_fn(state.params, reference, first)[1])
        )
        (grad_sum, metrics), _ = jax.lax.scan(accumulate, (zero_grads, metric_zeros), micro_batches)

        count = jnp.maximum(metrics["loss"][1], 1.0)
        grads = jax.tree.map(lambda g: g / count.astype(g.dtype), grad_sum)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(metrics["loss"][0]) & jnp.isfinite(grad_norm)
        new_state = apply_if_finite(state, grads, finite)
        one = jnp.ones((), jnp.float32)
        metrics = dict(metrics)
        metrics["grad_norm"] = (grad_norm, one)
        metrics["nonfinite"] = (1.0 - finite.astype(jnp.float32), one)
        return new_state, metrics

    return train_step


def make_apply_fn(model) -> Callable:
    """`(params, input_ids, attention_mask, position_ids=None) -> HiddenStates`, as the objectives call the
    model (row batches pass a `RowMask` and their positions). A [N, L] mask comes from the loader, which
    pads on the right: it reaches attention as `RightPadded`, which cuDNN reads as lengths.

    The model stops before its vocabulary head: the objectives project only the response positions
    (`dpo_jax.objectives.logps.token_logps`), in chunks, with the head's own [D, V] matrix in the
    compute dtype, so neither policy nor reference ever holds [N, L, V] logits.
    """

    def apply_fn(params, input_ids, attention_mask, position_ids=None):
        if attention_mask is not None and not isinstance(attention_mask, RowMask):
            attention_mask = RightPadded(attention_mask)
        hidden = model.apply(
            {"params": params},
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            return_hidden=True,
        )
        unembed = model.output_embedding(params).astype(model.config.compute_dtype)
        bias = model.output_bias(params)
        return HiddenStates(hidden, unembed, unembed_bias=None if bias is None else bias.astype(jnp.float32))

    return apply_fn


def make_value_fn(model) -> Callable:
    """`(params, input_ids, attention_mask) -> values [N, L]` of a scalar-head (reward) model, as
    `objectives.reward_batch_loss` calls it."""

    def value_fn(params, input_ids, attention_mask):
        return model.apply({"params": params}, input_ids, attention_mask=attention_mask)

    return value_fn


def jit_train_step(
    apply_fn: Callable, config, state_shardings, batch: dict, mesh, rules, *, has_reference: bool,
    loss_options: LossOptions | None = None,
):  # fmt: skip
    """The train step jitted with explicit in/out shardings and the state donated.

    The reference params share the policy's shardings and are never donated; `batch` (global
    arrays, or abstract ones for ahead-of-time compilation) fixes the batch shardings: its first
    dimension over the data-parallel axes. The step is traced inside the mesh and `rules`, so the
    models' activation constraints take effect.
    """
    batch_shardings = {k: batch_sharding(mesh, v.ndim) for k, v in batch.items()}
    reference_shardings = state_shardings.params if has_reference else None
    return jax.jit(
        traced_in_context(
            make_train_step(apply_fn, config, has_reference=has_reference, loss_options=loss_options),
            mesh,
            rules,
        ),
        in_shardings=(state_shardings, reference_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )
