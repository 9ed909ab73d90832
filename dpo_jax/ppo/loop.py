"""`run_ppo(config, workdir, prompts, reward)`: PPO from a policy (usually the SFT model), on any mesh,
resumable exactly.

Reads like the run: checks -> mesh -> policy, value model and reference -> sharded state -> restore ->
jitted programs -> loop (rollout, targets, epochs of minibatch updates, log, checkpoint) -> export.

Every random choice of step s (which prompts, the sampled tokens, the minibatch order) derives from
(config.seed, s), and the checkpoint holds the whole train state (policy, value model, optimizer), so
a run stopped after step s and resumed does exactly what an uninterrupted run does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from dpo_jax import UserError
from dpo_jax import data as data_lib
from dpo_jax.checkpoint import (
    CHECKPOINT_DIRNAME,
    Checkpointer,
    install_preemption_handler,
    should_stop_for_preemption,
)
from dpo_jax.evaluation.samples import left_padded_prompts
from dpo_jax.metrics.writer import MetricsWriter
from dpo_jax.models import to_hf
from dpo_jax.models.loading import (
    EXPORT_DIRNAME,
    load_model,
    load_reference_params,
    load_scalar_head_model,
    tokenizer_source,
)
from dpo_jax.ppo.kl_control import kl_controller
from dpo_jax.ppo.model import POLICY, VALUE, PolicyAndValue, make_logits_fn, make_policy_value_fn
from dpo_jax.ppo.rewards import RewardFn, as_float_scores, load_reward_model_fn, reward_model_source
from dpo_jax.ppo.rollout import make_rollout_targets, sample_responses
from dpo_jax.ppo.settings import resolve_ppo_sizes
from dpo_jax.ppo.step import MINIBATCH_KEYS, jit_ppo_update
from dpo_jax.sharding import data_parallel_size, gather_to_host, make_global_batch, mesh_and_rules
from dpo_jax.training.loop import FINISHED_MARKER, _optimizer_config, _workdir_path, default_cache_dir
from dpo_jax.training.optim import make_optimizer
from dpo_jax.training.state import create_train_state, place_reference
from dpo_jax.training.workdir import prepare_workdir, write_run_config

logger = logging.getLogger("dpo_jax")


@dataclasses.dataclass
class PPOResult:
    metrics: dict[str, float]  # the last step's logged metrics
    policy_model: Any
    params: Any  # {"policy": ..., "value": ...} on the mesh
    steps: int


def validate_ppo_config(config, *, num_prompts: int, data_parallel: int) -> None:
    """UserError naming the field for a PPO setting that cannot run."""
    p = config.ppo
    batch = config.global_batch_size
    if config.num_train_steps < 1:
        raise UserError(f"config.num_train_steps={config.num_train_steps}: PPO needs >= 1 rollout steps")
    if p.num_epochs < 1 or p.num_minibatches < 1 or batch % p.num_minibatches:
        raise UserError(
            f"config.ppo.num_epochs={p.num_epochs} and config.ppo.num_minibatches={p.num_minibatches} must be "
            f">= 1, and the minibatches must divide config.global_batch_size={batch}"
        )
    if (batch // p.num_minibatches) % data_parallel or batch % data_parallel:
        raise UserError(
            f"minibatches of {batch // p.num_minibatches} prompts do not split over the data-parallel size "
            f"{data_parallel}"
        )
    if batch > num_prompts:
        raise UserError(f"config.global_batch_size={batch} exceeds the {num_prompts} prompts")
    for field in ("kl_coef", "clip_range", "value_clip_range", "vf_coef", "entropy_coef"):
        if not p[field] >= 0:
            raise UserError(f"config.ppo.{field}={p[field]!r} must be >= 0")
    if not (0 <= p.gamma <= 1 and 0 <= p.lam <= 1):
        raise UserError(f"config.ppo.gamma={p.gamma} and config.ppo.lam={p.lam} must lie in [0, 1]")
    if config.grad_accum_steps != 1 or config.model.dropout_rate:
        raise UserError("PPO runs with config.grad_accum_steps=1 and no dropout")


def prompt_rows(num_prompts: int, batch: int, *, seed: int, step: int) -> np.ndarray:
    """The prompts of rollout `step`: consecutive slices of a fresh permutation per pass over the prompts."""
    per_pass = num_prompts // batch
    order = np.random.default_rng([seed, step // per_pass]).permutation(num_prompts)
    start = (step % per_pass) * batch
    return order[start : start + batch]


def _local(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous block of the global rows (every process holds the same host arrays)."""
    count, index = jax.process_count(), jax.process_index()
    return {k: np.split(np.asarray(v), count)[index] for k, v in rows.items()}


def _load_models(config):
    policy, policy_host = load_model(config.model, param_dtype=config.model.param_dtype, seed=config.seed)
    value, value_host = load_scalar_head_model(
        config.model,
        param_dtype=config.model.param_dtype,
        seed=config.seed,
        name_or_path=config.ppo.value_model or None,
        zero_head=not config.ppo.value_model,
    )
    reference_host = load_reference_params(config, policy_host)
    return policy, value, {POLICY: policy_host, VALUE: value_host}, reference_host


def run_ppo(
    config,
    workdir: str,
    prompt_ids: np.ndarray,
    prompt_mask: np.ndarray,
    reward: RewardFn | None = None,
    *,
    eos_id,
    pad_id: int,
) -> PPOResult:
    """PPO on left-padded prompts [N, P] (mask 1 on real tokens) with scores from `reward`, or from the
    reward model `config.ppo.reward_model` when `reward` is None; `eos_id` ends a response (None: every
    response has `config.ppo.max_new_tokens` tokens)."""
    # --- Checks and runtime ---------------------------------------------------------------------
    config = resolve_ppo_sizes(config)
    mesh, rules = mesh_and_rules(config.mesh_shape, config.logical_axis_rules)
    validate_ppo_config(config, num_prompts=len(prompt_ids), data_parallel=data_parallel_size(mesh))
    settings = config.ppo
    workdir = _workdir_path(workdir)
    prepare_workdir(workdir)
    write_run_config(workdir, config)
    prompt_ids, prompt_mask = np.asarray(prompt_ids, np.int32), np.asarray(prompt_mask, np.int32)
    if not np.all(prompt_mask[:, -1]):
        raise ValueError("PPO prompts must be left padded: prompt_mask[:, -1] must be 1 in every row")
    prompt_length = prompt_ids.shape[1]

    # --- Models, optimizer, sharded state, reference ---------------------------------------------
    policy, value, host_params, reference_host = _load_models(config)
    module = PolicyAndValue(policy.config, value.config)
    updates_per_step = settings.num_epochs * settings.num_minibatches
    tx, schedule = make_optimizer(_optimizer_config(config, config.num_train_steps * updates_per_step))
    state, state_shardings, abstract_state = create_train_state(
        module, host_params, tx, mesh, rules, seed=config.seed
    )
    reference = place_reference(reference_host, state_shardings.params[POLICY], config.reference.param_dtype)
    del host_params, reference_host
    if reward is None:
        reward = load_reward_model_fn(config, mesh, rules)

    # --- Restore --------------------------------------------------------------------------------
    checkpointer = Checkpointer(
        workdir / CHECKPOINT_DIRNAME,
        save_every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints,
    )
    if checkpointer.latest_step() is not None:
        state, position = checkpointer.restore(checkpointer.latest_step(), abstract_state)
        logger.info("resumed PPO from rollout step %d in %s", position["step"], checkpointer.directory)
        start_step = int(position["step"])
    else:
        start_step, position = 0, None
    kl_control = kl_controller(settings, position)  # a resumed run goes on with its saved coefficient

    # --- Programs -------------------------------------------------------------------------------
    apply_fn = make_policy_value_fn(module)
    targets_fn = jax.jit(make_rollout_targets(apply_fn, make_logits_fn(policy), settings, prompt_length))
    update = jit_ppo_update(apply_fn, settings, prompt_length, state_shardings, mesh)

    # --- Loop -----------------------------------------------------------------------------------
    writer = MetricsWriter(
        str(workdir), tensorboard=config.tensorboard, wandb_project=config.wandb_project, config=config
    )
    previous_handlers = install_preemption_handler()
    batch_size, minibatch = config.global_batch_size, config.global_batch_size // settings.num_minibatches
    logged: dict[str, float] = {}
    step = start_step
    while step < config.num_train_steps:
        start = time.time()
        rows = prompt_rows(len(prompt_ids), batch_size, seed=config.seed, step=step)
        prompts = make_global_batch(_local({"ids": prompt_ids[rows], "mask": prompt_mask[rows]}), mesh)
        rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
        response_ids, response_mask = gather_to_host(
            sample_responses(
                policy,
                state.params[POLICY],
                prompts["ids"],
                prompts["mask"],
                rng=rng,
                max_new_tokens=settings.max_new_tokens,
                eos_id=eos_id,
                pad_id=pad_id,
            )
        )
        scores = as_float_scores(
            reward(prompt_ids[rows], prompt_mask[rows], response_ids, response_mask), batch_size
        )
        rollout = {
            "input_ids": np.concatenate([prompt_ids[rows], response_ids], axis=1),
            "attention_mask": np.concatenate([prompt_mask[rows], response_mask], axis=1),
            "response_ids": response_ids,
            "response_mask": response_mask,
            "scores": scores,
        }
        batch = make_global_batch(_local(rollout), mesh)
        targets, rollout_stats = targets_fn(state.params, reference, batch, np.float32(kl_control.coef))
        kl_control.update(float(rollout_stats["rollout/kl"]), batch_size)  # for the next rollout
        targets = gather_to_host({key: targets[key] for key in MINIBATCH_KEYS})
        update_metrics = []
        for epoch in range(settings.num_epochs):
            order = np.random.default_rng([config.seed, step, epoch, 1]).permutation(batch_size)
            for block in range(settings.num_minibatches):
                picked = order[block * minibatch : (block + 1) * minibatch]
                chosen = make_global_batch(_local({k: v[picked] for k, v in targets.items()}), mesh)
                state, metrics = update(state, chosen)
                update_metrics.append(metrics)
        step += 1
        logged = _step_metrics(rollout_stats, update_metrics, schedule, state, time.time() - start)
        if step % config.log_every_steps == 0 or step == config.num_train_steps:
            writer.write(step, logged)
        if logged["nonfinite"] and config.nonfinite_policy == "stop":
            raise FloatingPointError(
                f"PPO step {step}: a non-finite loss or gradient (updates skipped); stopping"
            )
        checkpointer.save(step, state, {"step": step, **kl_control.position()})
        if should_stop_for_preemption(step, check_every_steps=config.log_every_steps):
            checkpointer.save(step, state, {"step": step, **kl_control.position()}, force=True)
            logger.warning("preemption signal: saved PPO step %d and stopping", step)
            break
    checkpointer.save(step, state, {"step": step, **kl_control.position()}, force=True)
    checkpointer.close()
    writer.close()
    for signum, handler in previous_handlers.items():
        signal.signal(signum, handler)

    # --- Export ---------------------------------------------------------------------------------
    if step == config.num_train_steps:
        _finish(config, workdir, policy, state)
    return PPOResult(logged, policy, state.params, step)


def _step_metrics(rollout_stats, update_metrics, schedule, state, seconds: float) -> dict[str, float]:
    floats = {k: float(v) for k, v in jax.device_get(rollout_stats).items()}
    updates = jax.device_get(update_metrics)
    for name in updates[0]:
        values = [float(m[name]) for m in updates]
        floats[name] = float(np.sum(values)) if name == "nonfinite" else float(np.mean(values))
    floats["learning_rate"] = float(schedule(int(jax.device_get(state.step)) - 1))
    floats["perf/step_seconds"] = seconds
    return floats


def _finish(config, workdir, policy, state) -> None:
    """The trained policy as a Hugging Face causal LM (WORKDIR/export) and the FINISHED marker."""
    params = gather_to_host(state.params[POLICY]) if config.export_hf else None
    if jax.process_index() == 0:
        if config.export_hf:
            to_hf(policy, params, str(workdir / EXPORT_DIRNAME))
        marker = {"step": config.num_train_steps, "time": time.time()}
        (workdir / FINISHED_MARKER).write_text(json.dumps(marker))
    multihost_utils.sync_global_devices("dpo_jax_ppo_finished")


def run_ppo_stage(config, workdir: str) -> PPOResult:
    """`stage="ppo"` from the command line: the prompts of the config's dataset (every distinct train
    prompt, left padded), scored by the reward model `config.ppo.reward_model`; responses end at EOS."""
    reward_model_source(config)  # a missing or unusable reward model stops the run before any loading
    tokenizer = data_lib.load_tokenizer(tokenizer_source(config))
    prepared = data_lib.build_datasets(
        config.data, tokenizer, stage="prompts", cache_dir=default_cache_dir(config, workdir)
    )
    prompt_ids, prompt_mask = left_padded_prompts(
        prepared.train, prepared.train.num_examples, prepared.pad_id, prepared.eos_id
    )
    return run_ppo(config, workdir, prompt_ids, prompt_mask, eos_id=prepared.eos_id, pad_id=prepared.pad_id)
