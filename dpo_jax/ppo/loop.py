"""`run_ppo(config, workdir, prompts, reward)`: PPO from a policy (usually the SFT model), on any mesh,
resumable exactly.

Reads like the run: checks -> mesh -> policy, value model and reference -> sharded state -> restore ->
jitted programs -> the stage's step (rollout, targets, epochs of minibatch updates) run by the
scaffold's loop (`run.loop.run_steps`: log, non-finite accounting, checkpoint, preemption, export), the
loop the trainer's stages run through, so `nonfinite_policy` and `log_every_steps` mean the same here.

Every random choice of step s (which prompts, the sampled tokens, the minibatch order) derives from
(config.seed, s), and the checkpoint holds the whole train state (policy, value model, optimizer), so
a run stopped after step s and resumed does exactly what an uninterrupted run does.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import numpy as np

from dpo_jax import UserError
from dpo_jax.evaluation.samples import left_padded_prompts
from dpo_jax.metrics import merge_metrics
from dpo_jax.models import to_hf
from dpo_jax.models.loading import EXPORT_DIRNAME, load_model, load_reference_params, load_scalar_head_model
from dpo_jax.ppo.kl_control import kl_controller
from dpo_jax.ppo.model import POLICY, VALUE, PolicyAndValue
from dpo_jax.ppo.programs import build_ppo_programs
from dpo_jax.ppo.rewards import RewardFn, as_float_scores, load_reward_model_fn, reward_model_source
from dpo_jax.ppo.settings import resolve_ppo_sizes
from dpo_jax.ppo.step import MINIBATCH_KEYS
from dpo_jax.run import LoopSettings, RunScaffold, StageSteps, run_steps
from dpo_jax.run.inputs import load_stage_data, locked_workdir
from dpo_jax.run.optim import make_optimizer
from dpo_jax.run.scaffold import applied_learning_rate, optimizer_config
from dpo_jax.run.state import create_train_state, place_reference
from dpo_jax.sharding import data_parallel_size, gather_to_host, make_global_batch, mesh_and_rules

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
    LoopSettings.from_config(config)  # the loop's fields (nonfinite_policy, log_every_steps, ...)
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
    response has `config.ppo.max_new_tokens` tokens). Runs inside the run scaffold and its loop (lock,
    resume, metrics merged over each log interval, non-finite accounting, preemption, FINISHED)."""
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

    # --- The steps (the scaffold's loop), export ---------------------------------------------------
    stage = _PPOStage(config, run, policy, programs, reward, prompt_ids, prompt_mask, reference, kl_control, mesh)
    steps = StageSteps(
        step=stage.step,
        position=stage.position,
        num_steps=config.num_train_steps,
        row_extras=lambda step, state, _: {
            "learning_rate": applied_learning_rate(schedule, state.opt_state, stage.last_update)
        },
        export=stage.export,
        headline=("ppo/loss", "ppo/grad_norm"),
    )
    outcome = run_steps(run, steps, state, start_step=start_step, settings=LoopSettings.from_config(config))
    return PPOResult(outcome.logged, policy, outcome.state.params, outcome.step, preempted=outcome.preempted)


class _PPOStage:
    """What PPO hands the scaffold's loop: one step is a rollout (sample, score, targets) and
    `num_epochs` x `num_minibatches` updates; its position is the step and the KL coefficient; its
    export the policy."""

    def __init__(self, config, run, policy, programs, reward, prompt_ids, prompt_mask, reference, kl_control, mesh):
        self.config, self.run, self.policy, self.programs, self.reward = config, run, policy, programs, reward
        self.prompt_ids, self.prompt_mask, self.reference = prompt_ids, prompt_mask, reference
        self.kl_control, self.mesh = kl_control, mesh
        self.last_update: dict = {}  # the last update's metrics (its skip flag names the learning rate)

    def export(self, state):
        """On every process: gather the policy; -> the writer process 0 runs (None without export_hf)."""
        if not self.config.export_hf:
            return None
        params = gather_to_host(state.params[POLICY])  # every process takes part
        return lambda: to_hf(self.policy, params, str(self.run.workdir / EXPORT_DIRNAME))

    def position(self, step: int) -> dict:
        return {"step": step, **self.kl_control.position()}

    def step(self, state, step: int):
        """Rollout `step` and its updates -> (state, metrics as (sum, count) pairs): the rollout's
        statistics once per step, each update's metrics once per update."""
        config, settings, mesh, programs = self.config, self.config.ppo, self.mesh, self.programs
        batch_size, minibatch = config.global_batch_size, config.global_batch_size // settings.num_minibatches
        prompt_ids, prompt_mask = self.prompt_ids, self.prompt_mask
        rows = prompt_rows(len(prompt_ids), batch_size, seed=config.seed, step=step)
        prompts = make_global_batch(_local({"ids": prompt_ids[rows], "mask": prompt_mask[rows]}), mesh)
        rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
        response_ids, response_mask = gather_to_host(
            programs.rollout(state.params[POLICY], prompts["ids"], prompts["mask"], rng)
        )
        scores = as_float_scores(
            self.reward(prompt_ids[rows], prompt_mask[rows], response_ids, response_mask), batch_size
        )
        rollout = {
            "input_ids": np.concatenate([prompt_ids[rows], response_ids], axis=1),
            "attention_mask": np.concatenate([prompt_mask[rows], response_mask], axis=1),
            "response_ids": response_ids,
            "response_mask": response_mask,
            "scores": scores,
        }
        targets, rollout_stats = programs.rollout_targets(
            state.params, self.reference, make_global_batch(_local(rollout), mesh), np.float32(self.kl_control.coef)
        )
        rollout_stats = jax.device_get(rollout_stats)
        self.kl_control.update(float(rollout_stats["rollout/kl"]), batch_size)  # for the next rollout
        targets = gather_to_host({key: targets[key] for key in MINIBATCH_KEYS})
        updates = []
        for epoch in range(settings.num_epochs):
            order = np.random.default_rng([config.seed, step, epoch, 1]).permutation(batch_size)
            for block in range(settings.num_minibatches):
                picked = order[block * minibatch : (block + 1) * minibatch]
                chosen = make_global_batch(_local({k: v[picked] for k, v in targets.items()}), mesh)
                state, metrics = programs.ppo_update(state, chosen)
                updates.append(metrics)
        updates = jax.device_get(updates)
        self.last_update = updates[-1]
        metrics = merge_metrics(*updates, {k: (float(v), 1.0) for k, v in rollout_stats.items()})
        return state, metrics


def run_ppo_stage(config, workdir: str) -> PPOResult:
    """`stage="ppo"` from the command line: the prompts of the config's dataset (every distinct train
    prompt, left padded), scored by the reward model `config.ppo.reward_model`; responses end at EOS."""
    check_ppo_config(config)
    reward_model_source(config)  # a missing or unusable reward model stops the run before any loading
    with locked_workdir(workdir):  # before the data: a second run on this workdir stops at once
        _, prepared = load_stage_data(config, workdir, data_stage="prompts")
        prompt_ids, prompt_mask = left_padded_prompts(
            prepared.train, prepared.train.num_examples, prepared.pad_id, prepared.eos_id
        )
        return run_ppo(
            config, workdir, prompt_ids, prompt_mask, eos_id=prepared.eos_id, pad_id=prepared.pad_id
        )
