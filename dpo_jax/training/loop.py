"""`train_and_evaluate(config, workdir)`: SFT, DPO or a reward model from a config, on any mesh, resumable.

Reads top to bottom like the run: checks -> mesh -> data -> model and optimizer -> sharded state
and reference -> restore -> the stage's step and hooks (eval, samples, export) -> the scaffold's loop
(`run.loop.run_steps`: log, non-finite accounting, checkpoint, preemption, export).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax

from dpo_jax import UserError
from dpo_jax import data as data_lib
from dpo_jax.data.packing import batch_layout
from dpo_jax.evaluation.passes import evaluate, pass_layout
from dpo_jax.evaluation.reference_cache import attach_reference_logps
from dpo_jax.evaluation.samples import side_by_side_samples, write_samples
from dpo_jax.metrics.writer import Throughput
from dpo_jax.models import to_hf
from dpo_jax.models.loading import (
    EXPORT_DIRNAME,
    check_model_sources,
    load_model,
    load_reference_params,
    load_scalar_head_model,
    tokenizer_source,
)
from dpo_jax.models.reward import export_reward_model
from dpo_jax.run import Hook, LoopSettings, RunScaffold, StageSteps, run_steps
from dpo_jax.run.inputs import load_stage_data, locked_workdir
from dpo_jax.run.optim import make_optimizer
from dpo_jax.run.scaffold import applied_learning_rate, optimizer_config
from dpo_jax.run.state import create_train_state, place_reference
from dpo_jax.sharding import data_parallel_size, gather_to_host, make_global_batch, mesh_and_rules
from dpo_jax.training.checks import data_stage, validate_config, validate_layout
from dpo_jax.training.programs import StagePrograms, stage_uses_reference

logger = logging.getLogger("dpo_jax")

__all__ = ["TrainResult", "describe_objective", "run_training", "train_and_evaluate"]


def _num_train_steps(config, steps_per_epoch: int) -> int:
    if config.num_train_steps:
        return config.num_train_steps
    if steps_per_epoch == 0:
        raise UserError(
            f"the train set has fewer examples than config.global_batch_size={config.global_batch_size}: no full step"
        )
    return config.num_epochs * steps_per_epoch


@dataclasses.dataclass
class TrainResult:
    metrics: dict[str, float]  # the last logged train metrics
    eval_metrics: dict[str, float]  # the last eval
    model: Any
    params: Any  # the final policy params, on the mesh
    steps: int
    preempted: bool = False  # stopped by SIGTERM after saving; the command exits with PREEMPTED_EXIT


def train_and_evaluate(config, workdir: str):
    """Train the stage the config asks for on its dataset: load the tokenizer and the data, then train."""
    validate_config(config)
    # What the run reads, checked before it creates anything: a mistake leaves no half-made workdir.
    check_model_sources(config)
    data_lib.check_data_path(config.data.path)
    tokenizer = data_lib.load_tokenizer(tokenizer_source(config))
    with locked_workdir(workdir):  # before the data: a second run on this workdir stops at once
        tokenizer, prepared = load_stage_data(config, workdir, data_stage=data_stage(config), tokenizer=tokenizer)
        return run_training(config, workdir, prepared, tokenizer=tokenizer)


def run_training(config, workdir: str, prepared, *, tokenizer=None) -> TrainResult:
    """Train one stage on prepared data (any `PreparedData`, e.g. synthetic token arrays)."""
    validate_config(config, num_responses=prepared.num_responses)
    with RunScaffold(config, workdir) as run:
        return _train(config, run, prepared, tokenizer)


def _train(config, run: RunScaffold, prepared, tokenizer) -> TrainResult:
    # --- Runtime ---------------------------------------------------------------------------------
    mesh, rules = mesh_and_rules(config.mesh_shape, config.logical_axis_rules)
    validate_layout(config, data_parallel_size=data_parallel_size(mesh), process_count=jax.process_count())
    logger.info(
        "mesh %s over %d devices, %d processes", dict(mesh.shape), jax.device_count(), jax.process_count()
    )
    logger.info("objective: %s", describe_objective(config))

    # --- Data -----------------------------------------------------------------------------------
    loader = data_lib.make_train_loader(
        prepared,
        global_batch_size=config.global_batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        layout=batch_layout(
            config.data, stage=config.stage, row_multiple=data_parallel_size(mesh) * config.grad_accum_steps
        ),
    )
    num_steps = _num_train_steps(config, loader.steps_per_epoch)
    data_metrics = {k: float(v) for k, v in prepared.report_metrics().items()}

    # --- Model, optimizer, sharded state, reference ----------------------------------------------
    if config.stage == "reward_model":  # the initial model's body under a scalar head
        model, host_params = load_scalar_head_model(
            config.model, param_dtype=config.model.param_dtype, seed=config.seed
        )
    else:
        model, host_params = load_model(config.model, param_dtype=config.model.param_dtype, seed=config.seed)
    tx, schedule = make_optimizer(optimizer_config(config, num_steps))
    state, state_shardings, abstract_state = create_train_state(
        model, host_params, tx, mesh, rules, seed=config.seed
    )
    programs = StagePrograms(config, model, mesh, rules)
    reference = None
    if programs.uses_reference:
        ref_host = load_reference_params(config, host_params)
        reference = place_reference(ref_host, state_shardings.params, config.reference.param_dtype)
    del host_params

    # --- Restore, the steps (the scaffold's loop), export ----------------------------------------
    restored = run.restore(abstract_state)
    start_step = 0
    if restored is not None:
        state, start_step = restored[1], int(jax.device_get(restored[1].step))
        loader.check_position(restored[2]["data_position"])
    stage = _TrainerStage(config, run, model, prepared, tokenizer, loader, programs, mesh)
    reference, hooks = stage.prepare(reference, start_step, num_steps)
    steps = StageSteps(
        step=stage.step_fn(state_shardings, reference, start_step, num_steps),
        position=stage.loader.position,
        num_steps=num_steps,
        row_extras=stage.row_extras(schedule, data_metrics, start_step, num_steps),
        export=stage.export,
        throughput=Throughput(
            model.config.num_params(),
            config.global_batch_size * prepared.num_responses * prepared.max_length,
            programs.flops_per_token_factor,
        ),
    )
    outcome = run_steps(
        run, steps, state, start_step=start_step, settings=LoopSettings.from_config(config), hooks=hooks
    )
    eval_metrics = {k.removeprefix("eval/"): v for k, v in outcome.hook_metrics.get("eval", {}).items()}
    return TrainResult(
        outcome.logged, eval_metrics, model, outcome.state.params, outcome.step, preempted=outcome.preempted
    )


class _TrainerStage:
    """What SFT, DPO and the reward model hand the scaffold's loop: the step on the loader's batches,
    the learning rate and data counters of a logged row, the eval and sample hooks, the export."""

    def __init__(self, config, run, model, prepared, tokenizer, loader, programs: StagePrograms, mesh):
        self.config, self.run, self.model, self.mesh = config, run, model, mesh
        self.prepared, self.tokenizer, self.loader, self.programs = prepared, tokenizer, loader, programs
        # Passes without gradients use the micro-batch size: it is known to fit.
        self.eval_batch_size = config.eval_batch_size or config.global_batch_size // config.grad_accum_steps

    def prepare(self, reference, start_step: int, num_steps: int):
        """(the reference the step reads, the hooks): with precomputed reference log-probs the batches
        carry them and the reference params are freed."""
        config, programs = self.config, self.programs
        if programs.precompute_reference:
            self.prepared = attach_reference_logps(
                self.prepared, programs.reference_logps, reference, config, self.mesh, self.eval_batch_size,
                workdir=str(self.run.workdir),
            ).prepared  # fmt: skip
            self.loader = self.loader.with_data(self.prepared)
            reference = None
        self.reference = reference
        steps_per_eval = max(1, config.eval_every_examples // config.global_batch_size)
        hooks = [Hook("eval", self.evaluate, every=steps_per_eval, at_start=bool(config.do_first_eval))]
        if config.eval_samples and self.tokenizer is not None and config.stage != "reward_model":
            hooks.append(Hook("samples", self.samples, every=steps_per_eval))
        logger.info(
            "training steps %d..%d (%d per epoch)", start_step, num_steps, self.loader.steps_per_epoch
        )
        return reference, hooks

    def step_fn(self, state_shardings, reference, start_step: int, num_steps: int):
        """`(state, s) -> (state, metrics)`: the jitted train step on batch s; batch s + 1 is built while
        the devices run step s."""
        loader, mesh = self.loader, self.mesh
        upcoming = {start_step: make_global_batch(loader.batch(start_step), mesh)}
        train_step = self.programs.train_step(state_shardings, upcoming[start_step])

        def step(state, index: int):
            state, metrics = train_step(state, reference, upcoming.pop(index))
            if index + 1 < num_steps:
                upcoming[index + 1] = make_global_batch(loader.batch(index + 1), mesh)
            # Tokens the model computes for real examples (no padding; a shared prompt once).
            return state, {**metrics, "data/real_tokens_per_step": (float(loader.real_tokens(index)), 1.0)}

        return step

    def row_extras(self, schedule, data_metrics, start_step: int, num_steps: int):
        # The run's first row, kept on resume, has the data counters already: metrics.jsonl stays that of
        # an unbroken run.
        pending = {} if start_step >= min(self.config.log_every_steps, num_steps) else dict(data_metrics)

        def extras(step: int, state, last_metrics) -> dict[str, float]:
            row = {"learning_rate": applied_learning_rate(schedule, state.opt_state, last_metrics)}
            row.update(pending)
            pending.clear()
            return row

        return extras

    def evaluate(self, step: int, state) -> dict[str, float]:
        metrics = evaluate(
            self.programs.eval_step, state.params, self.reference, self.prepared, self.eval_batch_size,
            self.mesh, pass_layout(self.config, self.mesh),
        )  # fmt: skip
        return {f"eval/{k}": v for k, v in metrics.items()}

    def samples(self, step: int, state) -> None:
        samples = side_by_side_samples(
            self.model, state.params, self.reference, self.prepared, self.tokenizer, self.config, step
        )
        write_samples(self.run.workdir, step, samples)

    def export(self, state):
        """On every process: gather the params; -> the writer process 0 runs (None without export_hf)."""
        config = self.config
        if not config.export_hf:
            return None
        params = gather_to_host(state.params)  # every process takes part
        path, prepared = str(self.run.workdir / EXPORT_DIRNAME), self.prepared
        if config.stage == "reward_model":
            # Transformers must pool the EOS the scores were trained at (see models.reward).
            return lambda: export_reward_model(
                self.model,
                params,
                path,
                tokenizer=self.tokenizer,
                pad_id=prepared.pad_id,
                eos_id=prepared.eos_id,
            )
        return lambda: to_hf(self.model, params, path, tokenizer=self.tokenizer)


def describe_objective(config) -> str:
    logps = (
        "token-mean log-probs (TRL's convention, config.length_normalize=True)"
        if config.length_normalize
        else "summed log-probs (the reference implementation's convention)"
    )
    reference = "with a reference model" if stage_uses_reference(config) else "no reference model"
    if config.reference_free:
        reference = "reference-free"
    return f"loss {config.loss}, beta {config.beta}, {logps}, {reference}"
