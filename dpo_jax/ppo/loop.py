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
import logging
import time
from typing import Any

import jax
import numpy as np

from dpo_jax import UserError
from dpo_jax import data as data_lib
from dpo_jax.evaluation.samples import left_padded_prompts
from dpo_jax.models import to_hf
from dpo_jax.models.loading import (
    EXPORT_DIRNAME,
    load_model,
    load_reference_params,
    load_scalar_head_model,
    tokenizer_source,
)
from dpo_jax.ppo.kl_control import kl_controller
from dpo_jax.ppo.model import POLICY, VALUE, PolicyAndValue
from dpo_jax.ppo.programs import build_ppo_programs
from dpo_jax.ppo.rewards import RewardFn, as_float_scores, load_reward_model_fn, reward_model_source
from dpo_jax.ppo.settings import resolve_ppo_sizes
from dpo_jax.ppo.step import MINIBATCH_KEYS
from dpo_jax.sharding import (
    data_parallel_size,
    gather_to_host,
    make_global_batch,
    mesh_and_rules,
)
from dpo_jax.training.loop import NonFiniteLossError, default_cache_dir
from dpo_jax.training.optim import make_optimizer
from dpo_jax.training.run import RunScaffold, applied_learning_rate, optimizer_config, workdir_path
from dpo_jax.training.state import create_train_state, place_reference
from dpo_jax.training.workdir import WorkdirLock, prepare_workdir

logger = logging.getLogger("dpo_jax")


@dataclasses.dataclass
class PPOResult:
    metrics: dict[str, float]  # the last step's logged metrics
    policy_model: Any
    params: Any  # {"policy": ..., "value": ...} on the mesh
    steps: int
    preempted: bool = False  # stopped by SIGTERM after saving; the command exits with PREEMPTED_EXIT


def check_ppo_config(config) -> None:
    """The start-up checks of a PPO stage that need neither data nor devices: the first thing
    `run_ppo_stage` does, and what a recipe runs on each PPO stage's config before any stage starts."""
    validate_ppo_config(resolve_ppo_sizes(config))


def validate_ppo_config(config, *, num_prompts: int | None = None, data_parallel: int | None = None) -> None:
    """UserError naming the field for a PPO setting that cannot run (the prompt count and the
    data-parallel size checked when given)."""
    p = config.ppo
    batch = config.global_batch_size
    if config.num_train_steps < 1:
        raise UserError(f"config.num_train_steps={config.num_train_steps}: PPO needs >= 1 rollout steps")
    if p.num_epochs < 1 or p.num_minibatches < 1 or batch % p.num_minibatches:
        raise UserError(
            f"config.ppo.num_epochs={p.num_epochs} and config.ppo.num_minibatches={p.num_minibatches} must be "
            f">= 1, and the minibatches must divide config.global_batch_size={batch}"
        )
    if data_parallel is not None and ((batch // p.num_minibatches) % data_parallel or batch % data_parallel):
        raise UserError(
            f"minibatches of {batch // p.num_minibatches} prompts do not split over the data-parallel size "
            f"{data_parallel}"
        )
    if num_prompts is not None and batch > num_prompts:
        raise UserError(f"config.global_batch_size={batch} exceeds the {num_prompts} prompts")
    for field in ("kl_coef", "clip_range", "value_clip_range", "vf_coef", "entropy_coef"):
        if not p[field] >= 0:
            raise UserError(f"config.ppo.{field}={p[field]!r} must be >= 0")
    if not (0 <= p.gamma <= 1 and 0 <= p.lam <= 1):
        raise UserError(f"config.ppo.gamma={p.gamma} and config.ppo.lam={p.lam} must lie in [0, 1]")
    if config.model.dropout_rate:
        # The ratio pi/pi_old of a clipped update is only 1 at the first minibatch without dropout.
        raise UserError(f"config.model.dropout_rate={config.model.dropout_rate}: PPO runs without dropout")
    if config.grad_accum_steps != 1:
        logger.info(
            "PPO: config.grad_accum_steps=%d is not used; each update is one minibatch of %d prompts "
            "(config.global_batch_size / config.ppo.num_minibatches: raise num_minibatches for less memory)",
            config.grad_accum_steps,
            batch // p.num_minibatches,
        )


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
    response has `config.ppo.max_new_tokens` tokens). Runs inside the run scaffold (lock, resume,
    metrics once per step, preemption, FINISHED)."""
    config = resolve_ppo_sizes(config)  # ppo.minibatch_size (TRL's mini_batch_size) -> num_minibatches
    mesh, rules = mesh_and_rules(config.mesh_shape, config.logical_axis_rules)
    validate_ppo_config(config, num_prompts=len(prompt_ids), data_parallel=data_parallel_size(mesh))
    prompt_ids, prompt_mask = np.asarray(prompt_ids, np.int32), np.asarray(prompt_mask, np.int32)
    if not np.all(prompt_mask[:, -1]):
        raise UserError("PPO prompts must be left padded: prompt_mask[:, -1] must be 1 in every row")
    with RunScaffold(config, workdir) as run:
        return _run(config, run, mesh, rules, prompt_ids, prompt_mask, reward, eos_id=eos_id, pad_id=pad_id)


def _run(config, run: RunScaffold, mesh, rules, prompt_ids, prompt_mask, reward, *, eos_id, pad_id):
    settings = config.ppo
    prompt_length = prompt_ids.shape[1]

    # --- Models, optimizer, sharded state, reference ---------------------------------------------
    policy, value, host_params, reference_host = _load_models(config)
    module = PolicyAndValue(policy.config, value.config)
    updates_per_step = settings.num_epochs * settings.num_minibatches
    tx, schedule = make_optimizer(optimizer_config(config, config.num_train_steps * updates_per_step))
    state, state_shardings, abstract_state = create_train_state(
        module, host_params, tx, mesh, rules, seed=config.seed
    )
    reference = place_reference(reference_host, state_shardings.params[POLICY], config.reference.param_dtype)
    del host_params, reference_host
    if reward is None:
        reward = load_reward_model_fn(config, mesh, rules)

    # --- Restore --------------------------------------------------------------------------------
    restored = run.restore(abstract_state)
    start_step, position = 0, None
    if restored is not None:
        state, position = restored[1], restored[2]["data_position"]
        start_step = int(position["step"])
    kl_control = kl_controller(settings, position)  # a resumed run goes on with its saved coefficient

    # --- Programs (traced inside the mesh and its logical-axis rules) ----------------------------
    programs = build_ppo_programs(
        config, policy, module, prompt_length, state_shardings, mesh, rules, eos_id=eos_id, pad_id=pad_id
    )

    # --- Loop -----------------------------------------------------------------------------------
    writer = run.metrics_writer(start_step)
    batch_size, minibatch = config.global_batch_size, config.global_batch_size // settings.num_minibatches
    logged: dict[str, float] = {}
    step, preempted = start_step, False
    while step < config.num_train_steps:
        start = time.time()
        rows = prompt_rows(len(prompt_ids), batch_size, seed=config.seed, step=step)
        prompts = make_global_batch(_local({"ids": prompt_ids[rows], "mask": prompt_mask[rows]}), mesh)
        rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
        response_ids, response_mask = gather_to_host(
            programs.rollout(state.params[POLICY], prompts["ids"], prompts["mask"], rng)
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
        targets, rollout_stats = programs.rollout_targets(
            state.params, reference, make_global_batch(_local(rollout), mesh), np.float32(kl_control.coef)
        )
        kl_control.update(float(rollout_stats["rollout/kl"]), batch_size)  # for the next rollout
        targets = gather_to_host({key: targets[key] for key in MINIBATCH_KEYS})
        update_metrics = []
        for epoch in range(settings.num_epochs):
            order = np.random.default_rng([config.seed, step, epoch, 1]).permutation(batch_size)
            for block in range(settings.num_minibatches):
                picked = order[block * minibatch : (block + 1) * minibatch]
                chosen = make_global_batch(_local({k: v[picked] for k, v in targets.items()}), mesh)
                state, metrics = programs.ppo_update(state, chosen)
                update_metrics.append(metrics)
        step += 1
        logged = _step_metrics(rollout_stats, update_metrics, schedule, state, time.time() - start)
        if step % config.log_every_steps == 0 or step == config.num_train_steps:
            writer.write(step, logged)
        if logged["nonfinite"] and config.nonfinite_policy == "stop":
            raise NonFiniteLossError(
                f"PPO step {step}: a non-finite loss or gradient (updates skipped); stopping"
            )
        run.save(step, state, {"step": step, **kl_control.position()})
        if run.preempted(step, state, {"step": step, **kl_control.position()}, num_steps=config.num_train_steps):
            preempted = True
            break
    run.save(step, state, {"step": step, **kl_control.position()}, force=True)

    # --- Export ---------------------------------------------------------------------------------
    if step == config.num_train_steps:
        params = gather_to_host(state.params[POLICY]) if config.export_hf else None  # every process
        export = (
            (lambda: to_hf(policy, params, str(run.workdir / EXPORT_DIRNAME))) if config.export_hf else None
        )
        run.finish(step, export)
    return PPOResult(logged, policy, state.params, step, preempted=preempted)


def _step_metrics(rollout_stats, update_metrics, schedule, state, seconds: float) -> dict[str, float]:
    floats = {k: float(v) for k, v in jax.device_get(rollout_stats).items()}
    updates = jax.device_get(update_metrics)
    for name in updates[0]:
        values = [float(m[name]) for m in updates]
        floats[name] = float(np.sum(values)) if name == "nonfinite" else float(np.mean(values))
    floats["learning_rate"] = applied_learning_rate(schedule, state.opt_state, updates[-1])
    floats["perf/step_seconds"] = seconds
    return floats


def run_ppo_stage(config, workdir: str) -> PPOResult:
    """`stage="ppo"` from the command line: the prompts of the config's dataset (every distinct train
    prompt, left padded), scored by the reward model `config.ppo.reward_model`; responses end at EOS."""
    check_ppo_config(config)
    reward_model_source(config)  # a missing or unusable reward model stops the run before any loading
    path = workdir_path(workdir)
    prepare_workdir(path)
    with WorkdirLock(path):  # before the data: a second run on this workdir stops at once
        tokenizer = data_lib.load_tokenizer(tokenizer_source(config))
        prepared = data_lib.build_datasets(
            config.data, tokenizer, stage="prompts", cache_dir=default_cache_dir(config, workdir)
        )
        prompt_ids, prompt_mask = left_padded_prompts(
            prepared.train, prepared.train.num_examples, prepared.pad_id, prepared.eos_id
        )
        return run_ppo(
            config, workdir, prompt_ids, prompt_mask, eos_id=prepared.eos_id, pad_id=prepared.pad_id
        )
