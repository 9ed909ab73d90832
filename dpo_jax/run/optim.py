"""Optimizer and learning-rate schedule built from the config.

Owns the mapping from config fields (optimizer, learning_rate, warmup_steps, lr_schedule,
total_steps, weight_decay, adam_b1/b2/eps, adam_mu_dtype, max_grad_norm) to one optax transformation. Gradient
accumulation is not handled here: the train step accumulates before calling the optimizer.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dpo_jax import UserError

OPTIMIZERS = ("adamw", "adam", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine", "linear")
ADAM_MU_DTYPES = ("float32", "bfloat16")
# The benchmark's (and the H100 memory check's) choice: "auto" resolves to one of ADAM_MU_DTYPES.
AUTO_MU_STATE_FRACTION = 0.5


def auto_adam_mu_dtype(
    num_params: int, *, state_shards: int, device_bytes: int | None, grad_accum_steps: int, reference: bool
) -> str:
    """bf16 first moment when the fp32 training state would take over half of a device, else fp32.

    Per parameter, each device holds (divided over `state_shards` when the state is sharded): fp32
    weights, first and second moments and gradient (4 bytes each), the gradient sum across
    micro-batches (4 more when `grad_accum_steps` > 1) and the bf16 reference (2). Pythia-2.8B on
    one 80 GB H100 holds 61 GB of it and gets bf16 (-5.6 GB: what lets its step fit with no
    rematerialisation at micro-batch 8); Pythia-1.4B (31 GB) keeps fp32. Unknown device memory (CPU)
    keeps fp32.
    """
    if not device_bytes:
        return "float32"
    per_param = 16 + (4 if grad_accum_steps > 1 else 0) + (2 if reference else 0)
    state = num_params * per_param / max(1, state_shards)
    return "bfloat16" if state > AUTO_MU_STATE_FRACTION * device_bytes else "float32"


# torch.optim.RMSprop defaults, which the DPO paper's code base trains with.
RMSPROP_DECAY = 0.99
RMSPROP_EPS = 1e-8

# Decoupled weight decay skips biases and layer-norm scales, as is usual for transformers.
NO_DECAY_PARAM_NAMES = frozenset({"bias", "scale"})


def make_schedule(
    *, learning_rate: float, warmup_steps: int, lr_schedule: str, total_steps: int | None = None
) -> optax.Schedule:
    """Linear warmup, then constant, cosine or linear decay to zero at `total_steps`.

    Warmup follows the DPO reference code: the factor at update `step` (counting from 0) is
    min(1, (step + 1) / (warmup_steps + 1)), so the very first update already moves the params.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise UserError(f"Unknown lr_schedule {lr_schedule!r}; expected one of {LR_SCHEDULES}.")
    if not learning_rate > 0:
        raise UserError(f"learning_rate must be positive, got {learning_rate}.")
    if warmup_steps < 0:
        raise UserError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    decaying = lr_schedule != "constant"
    if decaying and (total_steps is None or total_steps <= warmup_steps):
        raise UserError(
            f"lr_schedule {lr_schedule!r} needs total_steps > warmup_steps, got total_steps={total_steps}, "
            f"warmup_steps={warmup_steps}."
        )

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        warmup_factor = jnp.minimum(1.0, (step + 1.0) / (warmup_steps + 1.0))
        if not decaying:
            return learning_rate * warmup_factor
        progress = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        if lr_schedule == "cosine":
            decay_factor = 0.5 * (1.0 + jnp.cos(math.pi * progress))
        else:
            decay_factor = 1.0 - progress
        return learning_rate * warmup_factor * decay_factor

    return schedule


def weight_decay_mask(params: Any) -> Any:
    """True for params that weight decay applies to: all but biases and layer-norm scales."""

    def decays(path: tuple, _leaf: Any) -> bool:
        dict_keys = [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)]
        return not (dict_keys and dict_keys[-1] in NO_DECAY_PARAM_NAMES)

    return jax.tree_util.tree_map_with_path(decays, params)


def _coupled_weight_decay(weight_decay: float) -> optax.GradientTransformation:
    # torch's Adam / RMSprop / SGD add weight_decay * param to the gradient (L2), before any scaling.
    if weight_decay == 0:
        return optax.identity()
    return optax.add_decayed_weights(weight_decay, mask=weight_decay_mask)


def _config_value(config: Any, name: str) -> Any:
    try:
        return config[name]
    except KeyError:
        raise UserError(f"Optimizer config is missing the field {name!r}.") from None


def make_optimizer(config: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(transformation, schedule) from the config; gradients are clipped first when max_grad_norm > 0."""
    optimizer = _config_value(config, "optimizer")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"Unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}.")
    lr_schedule = _config_value(config, "lr_schedule")
    schedule = make_schedule(
        learning_rate=float(_config_value(config, "learning_rate")),
        warmup_steps=int(_config_value(config, "warmup_steps")),
        lr_schedule=lr_schedule,
        total_steps=int(_config_value(config, "total_steps")) if lr_schedule != "constant" else None,
    )
    weight_decay = float(_config_value(config, "weight_decay"))
    max_grad_norm = float(_config_value(config, "max_grad_norm"))
    if weight_decay < 0:
        raise UserError(f"weight_decay must be >= 0, got {weight_decay}.")
    if max_grad_norm < 0:
        raise UserError(f"max_grad_norm must be >= 0 (0 turns clipping off), got {max_grad_norm}.")

    if optimizer in ("adamw", "adam"):
        b1, b2, eps = (float(_config_value(config, name)) for name in ("adam_b1", "adam_b2", "adam_eps"))
        if not (0 <= b1 < 1 and 0 <= b2 < 1 and eps > 0):
            raise UserError(
                f"Need 0 <= adam_b1, adam_b2 < 1 and adam_eps > 0; got b1={b1}, b2={b2}, eps={eps}."
            )
        # The first moment may be kept in bf16 (half its memory: 5.6 GB at 2.8B); the second stays
        # fp32, whose small values bf16 would round badly.
        mu_dtype = config.get("adam_mu_dtype", "float32")
        if mu_dtype not in ADAM_MU_DTYPES:
            raise ValueError(f"adam_mu_dtype must be one of {ADAM_MU_DTYPES}, got {mu_dtype!r}.")
        moments = dict(b1=b1, b2=b2, eps=eps, mu_dtype=jnp.dtype(mu_dtype))
        if optimizer == "adamw":
            update_rule = optax.adamw(schedule, weight_decay=weight_decay, mask=weight_decay_mask, **moments)
        else:
            update_rule = optax.chain(_coupled_weight_decay(weight_decay), optax.adam(schedule, **moments))
    elif optimizer == "rmsprop":
        # eps outside the square root and a zero initial accumulator, exactly torch's update.
        update_rule = optax.chain(
            _coupled_weight_decay(weight_decay),
            optax.rmsprop(schedule, decay=RMSPROP_DECAY, eps=RMSPROP_EPS, eps_in_sqrt=False),
        )
    else:
        update_rule = optax.chain(_coupled_weight_decay(weight_decay), optax.sgd(schedule))

    if max_grad_norm > 0:
        update_rule = optax.chain(optax.clip_by_global_norm(max_grad_norm), update_rule)
    return update_rule, schedule
