"""`train_and_evaluate(config, workdir)`: SFT or DPO from a config, on any mesh, resumable.

Reads top to bottom like the run: checks -> mesh -> data -> model and optimizer -> sharded state
and reference -> restore -> jitted steps -> loop (log, eval, checkpoint, preemption) -> export.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax

from dpo_jax import UserError
from dpo_jax import data as data_lib
from dpo_jax.data.packing import batch_layout
from dpo_jax.evaluation.passes import evaluate, pass_layout
from dpo_jax.evaluation.reference_cache import attach_reference_logps
from dpo_jax.evaluation.samples import side_by_side_samples, write_samples
from dpo_jax.metrics import merge_metrics, metrics_to_floats
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
from dpo_jax.sharding import data_parallel_size, gather_to_host, make_global_batch, mesh_and_rules
from dpo_jax.training.checks import data_stage, validate_config, validate_layout
from dpo_jax.training.optim import make_optimizer
from dpo_jax.training.programs import StagePrograms, stage_uses_reference
from dpo_jax.training.run import (
    FINISHED_MARKER,
    Preempted,
    RunScaffold,
    applied_learning_rate,
    optimizer_config,
    workdir_path,
)
from dpo_jax.training.state import create_train_state, place_reference
from dpo_jax.training.workdir import WorkdirLock, prepare_workdir

logger = logging.getLogger("dpo_jax")

__all__ = [
    "FINISHED_MARKER", "NonFiniteLossError", "Preempted", "TrainResult", "applied_learning_rate",
    "run_training", "train_and_evaluate",
]  # fmt: skip


class NonFiniteLossError(RuntimeError):
    pass


def _num_train_steps(config, steps_per_epoch: int) -> int:
    if config.num_train_steps:
        return config.num_train_steps
    if steps_per_epoch == 0:
        raise UserError(
            f"the train set has fewer examples than config.global_batch_size={config.global_batch_size}: no full step"
        )
    return config.num_epochs * steps_per_epoch


def default_cache_dir(config, workdir: str) -> str:
    """Where tokenised data is cached: config.data.cache_dir, else beside the run in a local workdir.

    A gs:// workdir (TPU VMs) gets a local per-host cache instead: the cache is plain files keyed by
    content, so it is safe to share between runs and must not go through pathlib onto a URL.
    """
    if config.data.cache_dir:
        return config.data.cache_dir
    if "://" in workdir:
        return os.path.expanduser("~/.cache/dpo_jax/data")
    return str(workdir_path(workdir) / "data_cache")


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
    path = workdir_path(workdir)
    prepare_workdir(path)
    with WorkdirLock(path):  # before the data: a second run on this workdir stops at once
        cache_dir = default_cache_dir(config, workdir)
        prepared = data_lib.build_datasets(
            config.data, tokenizer, stage=data_stage(config), cache_dir=cache_dir
        )
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

    # --- Restore, loop ----------------------------------------------------------------------------
    restored = run.restore(abstract_state)
    if restored is not None:
        state = restored[1]
        loader.check_position(restored[2]["data_position"])
    loop = _Loop(config, run, model, prepared, tokenizer, loader, schedule, num_steps)
    state, outcome = loop.run(state, reference, state_shardings, mesh, programs, data_metrics)

    # --- Export ---------------------------------------------------------------------------------
    if outcome.step == num_steps:
        _finish(config, run, model, state, tokenizer, pad_id=prepared.pad_id, eos_id=prepared.eos_id)
    return TrainResult(
        outcome.last_logged, outcome.last_eval, model, state.params, outcome.step, preempted=outcome.preempted
    )


@dataclasses.dataclass
class _Outcome:
    step: int
    preempted: bool
    last_logged: dict[str, float]
    last_eval: dict[str, float]


class _Loop:
    """The loop over steps: train, log, evaluate, checkpoint, stop on preemption or persistent non-finite steps."""

    def __init__(self, config, run, model, prepared, tokenizer, loader, schedule, num_steps):
        self.config, self.run_scaffold, self.workdir, self.model = config, run, run.workdir, model
        self.prepared, self.tokenizer, self.loader = prepared, tokenizer, loader
        self.schedule, self.num_steps = schedule, num_steps
        self.consecutive_skipped = 0
        self.applied = 0  # updates applied by this process's run (a resumed run counts from its restart)

    def run(self, state, reference, state_shardings, mesh, programs: StagePrograms, data_metrics):
        config, prepared, loader = self.config, self.prepared, self.loader
        start_step = int(jax.device_get(state.step))
        if start_step >= min(config.log_every_steps, self.num_steps):  # the run's first row, kept on resume,
            data_metrics = {}  # has the data counters already: metrics.jsonl stays that of an unbroken run
        # Passes without gradients use the micro-batch size: it is known to fit.
        eval_batch_size = config.eval_batch_size or config.global_batch_size // config.grad_accum_steps
        if programs.precompute_reference:
            prepared = attach_reference_logps(
                prepared, programs.reference_logps, reference, config, mesh, eval_batch_size,
                workdir=str(self.workdir),
            ).prepared  # fmt: skip
            loader = loader.with_data(prepared)
            reference = None  # freed: the logps travel with the batches
        first_batch = make_global_batch(loader.batch(start_step), mesh)
        train_step = programs.train_step(state_shardings, first_batch)
        eval_step = programs.eval_step

        writer = self.run_scaffold.metrics_writer(start_step)
        tokens_per_step = config.global_batch_size * prepared.num_responses * prepared.max_length
        throughput = Throughput(self.model.config.num_params(), tokens_per_step, programs.flops_per_token_factor)
        progress = _progress_bar(config, start_step, self.num_steps)
        steps_per_eval = max(1, config.eval_every_examples // config.global_batch_size)
        last_logged, last_eval, pending, real_tokens, previous = {}, {}, [], [], None
        preempted = False

        def run_eval(step):
            metrics = evaluate(
                eval_step, state.params, reference, prepared, eval_batch_size, mesh, pass_layout(config, mesh)
            )
            writer.write(step, {f"eval/{k}": v for k, v in metrics.items()})
            return metrics

        try:
            if start_step == 0 and config.do_first_eval:
                last_eval = run_eval(0)
            logger.info(
                "training steps %d..%d (%d per epoch)", start_step, self.num_steps, loader.steps_per_epoch
            )
            batch, step = first_batch, start_step
            while step < self.num_steps:
                state, metrics = train_step(state, reference, batch)
                step += 1
                # Check the previous step's flag now: it is done, so this costs no pipeline stall.
                if previous is not None:
                    self._check_finite(previous, step - 1)
                previous = metrics
                pending.append(metrics)
                real_tokens.append(loader.real_tokens(step - 1))
                if step < self.num_steps:
                    batch = make_global_batch(loader.batch(step), mesh)
                if step % config.log_every_steps == 0 or step == self.num_steps:
                    self._check_finite(previous, step)
                    previous = None
                    # Tokens the model computes for real examples (no padding; a shared prompt once).
                    data_metrics["data/real_tokens_per_step"] = sum(real_tokens) / len(real_tokens)
                    last_logged = self._log_train(writer, pending, step, state, throughput, data_metrics)
                    data_metrics, pending, real_tokens = {}, [], []
                if step % steps_per_eval == 0 or step == self.num_steps:
                    last_eval = run_eval(step)
                    if config.eval_samples and self.tokenizer is not None and config.stage != "reward_model":
                        samples = side_by_side_samples(
                            self.model, state.params, reference, prepared, self.tokenizer, config, step
                        )
                        write_samples(self.workdir, step, samples)
                self._save(step, state)
                if self.run_scaffold.preempted(
                    step, state, self.loader.position(step), num_steps=self.num_steps
                ):
                    preempted = True
                    break
                if progress is not None:
                    progress.update(1)
                    perf = {k: v for k, v in last_logged.items() if k.startswith("perf/")}
                    progress.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in perf.items()})
            if previous is not None:
                self._check_finite(previous, step)
            if step > start_step and self.applied == 0 and not preempted:
                raise NonFiniteLossError(
                    f"no step of this run ({start_step + 1}..{step}) updated the parameters: every one was "
                    "non-finite and skipped. Not exporting the unchanged model."
                )
            self._save(step, state, force=True)
        finally:
            if progress is not None:
                progress.close()
        return state, _Outcome(step, preempted, last_logged, last_eval)

    def _save(self, step, state, *, force=False):
        self.run_scaffold.save(step, state, self.loader.position(step), force=force)

    def _check_finite(self, metrics, step: int) -> None:
        if float(jax.device_get(metrics["nonfinite"][0])) == 0.0:
            self.consecutive_skipped = 0
            self.applied += 1
            return
        self.consecutive_skipped += 1
        floats = metrics_to_floats(metrics)
        message = (
            f"non-finite loss or gradient at step {step} (loss={floats.get('loss')}, "
            f"grad_norm={floats.get('grad_norm')}); the update was skipped"
        )
        if self.config.nonfinite_policy == "stop":
            raise NonFiniteLossError(
                message + ". Stopping (set config.nonfinite_policy='skip' to skip such steps)."
            )
        limit = self.config.max_consecutive_skipped_steps
        if limit and self.consecutive_skipped >= limit:
            raise NonFiniteLossError(
                f"{message}: {self.consecutive_skipped} non-finite steps in a row "
                f"(config.max_consecutive_skipped_steps={limit}). Stopping: the run is not training."
            )
        logger.warning(message)

    def _log_train(self, writer, pending, step, state, throughput, data_metrics) -> dict[str, float]:
        summed = merge_metrics(*jax.device_get(pending))
        floats = metrics_to_floats(summed, skip_empty=True)
        floats["nonfinite"] = float(summed["nonfinite"][0])  # skipped steps in this interval, not a mean
        floats["learning_rate"] = applied_learning_rate(self.schedule, state.opt_state, pending[-1])
        floats.update(throughput.update(step))
        floats.update(data_metrics)
        writer.write(step, floats)
        return floats


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


def _progress_bar(config, start: int, total: int):
    if not config.progress_bar or jax.process_index() != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)


def _finish(config, run: RunScaffold, model, state, tokenizer, *, pad_id: int, eos_id: int) -> None:
    params = gather_to_host(state.params) if config.export_hf else None  # every process takes part

    def export():
        if config.export_hf and config.stage == "reward_model":
            # Transformers must pool the EOS the scores were trained at (see models.reward).
            export_reward_model(
                model,
                params,
                str(run.workdir / EXPORT_DIRNAME),
                tokenizer=tokenizer,
                pad_id=pad_id,
                eos_id=eos_id,
            )
        elif config.export_hf:
            to_hf(model, params, str(run.workdir / EXPORT_DIRNAME), tokenizer=tokenizer)

    run.finish(int(jax.device_get(state.step)), export)
