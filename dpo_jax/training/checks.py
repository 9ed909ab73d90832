"""Start-up checks of a run config: every value that would fail at step 1000 fails here instead.

`validate_config` needs no devices, data or model; `validate_layout` checks the batch against the
mesh once the devices are known.
"""

from __future__ import annotations

import math

from dpo_jax import UserError
from dpo_jax.objectives import LossOptions, uses_reference
from dpo_jax.run.loop import LoopSettings
from dpo_jax.sampling.settings import SamplingSettings, SamplingSettingsError

# sft and dpo train a policy; reward_model trains a scalar-head model on the same preference data.
STAGES = ("sft", "dpo", "reward_model")


def data_stage(config) -> str:
    """The kind of examples the stage reads: responses for SFT, ranked responses otherwise."""
    return "sft" if config.stage == "sft" else "dpo"


def loss_options_from_config(config, *, num_responses: int | None = None) -> LossOptions:
    """The config's objective as the one validated value the objectives take (UserError if invalid)."""
    return LossOptions(
        loss_name=config.loss,
        beta=config.beta,
        length_normalize=config.length_normalize,
        reference_free=config.reference_free,
        label_smoothing=config.label_smoothing,
        top_k=config.plackett_luce_top_k,
        unlikelihood_alpha=config.unlikelihood_alpha,
        reward_model=config.stage == "reward_model",
        num_responses=num_responses,
    )


def _validate_reward_model(config, num_responses: int) -> None:
    loss_options_from_config(config, num_responses=num_responses)
    if config.reference_free or config.length_normalize or config.reference.precompute_logps:
        raise UserError(
            "config.reference_free, config.length_normalize and config.reference.precompute_logps are "
            "policy settings; a reward model scores whole sequences and has no reference"
        )
    if config.data.pack:
        raise UserError(
            "config.data.pack is for the policy stages (sft, dpo); a reward model trains on padded batches "
            "(config.data.share_prompt does not apply to it either)"
        )


def validate_config(config, *, num_responses: int | None = None) -> None:
    """Raise UserError naming the field for any inconsistent setting.

    num_responses is the K the data gives (2 for pairs); before the data is loaded it is assumed
    to be 1 for SFT and 2 for pairwise losses, and checked again once known.
    """
    if config.stage not in STAGES:
        raise UserError(f"config.stage={config.stage!r}; expected one of {STAGES}")
    if num_responses is None:
        num_responses = 1 if config.stage == "sft" else max(2, config.plackett_luce_top_k)
    if config.stage == "reward_model":
        _validate_reward_model(config, num_responses)
    elif (config.stage == "sft") != (config.loss == "sft"):
        raise UserError(
            f"config.stage={config.stage!r} with config.loss={config.loss!r}: the sft stage trains loss 'sft' "
            "and the dpo stage a preference loss"
        )
    else:
        _validate_policy_loss(config, num_responses)
    _validate_run(config)


def eval_sampling_settings(config) -> SamplingSettings:
    """The settings of the eval's side-by-side samples (evaluation/samples.py), checked at start-up."""
    try:
        return SamplingSettings(
            temperature=config.eval_sample_temperature, max_new_tokens=max(1, config.eval_sample_max_new_tokens)
        )
    except SamplingSettingsError as error:
        raise UserError(f"config.eval_sample_{error.field}={error.value!r} {error.rule}") from None


def _validate_policy_loss(config, num_responses: int) -> None:
    loss_options_from_config(config, num_responses=num_responses)
    if config.reference.precompute_logps and not uses_reference(
        config.loss, reference_free=config.reference_free
    ):
        raise UserError("config.reference.precompute_logps=True but this run uses no reference model")


def _validate_run(config) -> None:
    LoopSettings.from_config(config)  # the loop's fields (nonfinite_policy, log_every_steps, ...)
    if config.model.dropout_rate:
        # The reference forward must be deterministic while the policy's is not; until the step
        # carries separate apply functions, refuse rather than silently train without dropout.
        raise UserError(
            f"config.model.dropout_rate={config.model.dropout_rate}: training with dropout is not supported; "
            "DPO trains with dropout off (as the reference implementation)"
        )
    for field in ("global_batch_size", "grad_accum_steps", "checkpoint_every_steps"):
        if getattr(config, field) < 1:
            raise UserError(f"config.{field}={getattr(config, field)} must be >= 1")
    if config.global_batch_size % config.grad_accum_steps:
        raise UserError(
            f"config.global_batch_size={config.global_batch_size} is not divisible by "
            f"config.grad_accum_steps={config.grad_accum_steps}"
        )
    _validate_optimizer_values(config)
    eval_sampling_settings(config)
    if config.num_train_steps < 0 or config.num_epochs < 0:
        raise UserError("config.num_train_steps and config.num_epochs must be >= 0")
    if config.num_train_steps == 0 and config.num_epochs == 0:
        raise UserError("set config.num_train_steps or config.num_epochs")


def validate_layout(config, *, data_parallel_size: int, process_count: int) -> None:
    """The global batch must split evenly over hosts, data-parallel devices and micro-batches."""
    micro = config.global_batch_size // config.grad_accum_steps
    if micro % data_parallel_size:
        raise UserError(
            f"micro-batch of {micro} (config.global_batch_size={config.global_batch_size} / "
            f"config.grad_accum_steps={config.grad_accum_steps}) is not divisible by the data-parallel size "
            f"{data_parallel_size} (mesh data x fsdp, config.mesh_shape={tuple(config.mesh_shape)})"
        )
    if config.global_batch_size % process_count:
        raise UserError(
            f"config.global_batch_size={config.global_batch_size} is not divisible by the number of "
            f"processes {process_count}"
        )


def _validate_optimizer_values(config) -> None:
    # make_optimizer checks them again once the step count is known, which is after data preparation:
    # a nan or a sign typo should not cost that wait.
    for field, lowest, inclusive in (
        ("learning_rate", 0.0, False),
        ("weight_decay", 0.0, True),
        ("max_grad_norm", 0.0, True),
        ("warmup_steps", 0, True),
    ):
        value = config.get(field)
        if value is None:
            continue
        above = value >= lowest if inclusive else value > lowest
        if not (math.isfinite(value) and above):
            bound = f">= {lowest}" if inclusive else f"> {lowest}"
            raise UserError(f"config.{field}={value} must be a finite number {bound}")
