"""`train_and_evaluate(config, workdir)`: SFT or DPO from a config, on any mesh, resumable.

Reads top to bottom like the run: checks -> mesh -> data -> model and optimizer -> sharded state
and reference -> restore -> jitted steps -> loop (log, eval, checkpoint, preemption) -> export.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

import jax
from etils import epath
from jax.experimental import multihost_utils

from dpo_jax import data as data_lib
from dpo_jax.checkpoint import Checkpointer, install_preemption_handler, should_stop_for_preemption
from dpo_jax.data.packing import layout_from_config
from dpo_jax.evaluation.passes import evaluate, jit_eval_step, pass_layout, precompute_reference_logps
from dpo_jax.evaluation.samples import side_by_side_samples, write_samples
from dpo_jax.metrics import merge_metrics, metrics_to_floats
from dpo_jax.metrics.writer import MetricsWriter, Throughput
from dpo_jax.models import to_hf
from dpo_jax.models.loading import EXPORT_DIRNAME, load_model, tokenizer_source
from dpo_jax.objectives import uses_reference
from dpo_jax.sharding import data_parallel_size, gather_to_host, make_global_batch, mesh_and_rules
from dpo_jax.training.checks import validate_config, validate_layout
from dpo_jax.training.optim import make_optimizer
from dpo_jax.training.state import create_train_state, place_reference
from dpo_jax.training.step import jit_train_step, make_apply_fn

logger = logging.getLogger("dpo_jax")

FINISHED_MARKER = "FINISHED"  # launch/sweep.py skips workdirs that have it


class NonFiniteLossError(RuntimeError):
    pass


def _workdir_path(workdir: str) -> epath.Path:
    """Local paths made absolute (Orbax needs it); gs:// and other URLs as they are."""
    return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))


def _prepare_workdir(workdir: epath.Path, config) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_probe_{jax.process_index()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"workdir {str(workdir)!r} is not writable: {e}") from e
    if jax.process_index() == 0:
        (workdir / "run_config.json").write_text(config.to_json_best_effort(indent=2))


def _num_train_steps(config, steps_per_epoch: int) -> int:
    if config.num_train_steps:
        return config.num_train_steps
    if steps_per_epoch == 0:
        raise ValueError(
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
    return str(_workdir_path(workdir) / "data_cache")


@dataclasses.dataclass
class TrainResult:
    metrics: dict[str, float]  # the last logged train metrics
    eval_metrics: dict[str, float]  # the last eval
    model: Any
    params: Any  # the final policy params, on the mesh
    steps: int


def train_and_evaluate(config, workdir: str):
    """Train the stage the config asks for on its dataset: load the tokenizer and the data, then train."""
    validate_config(config)
    _prepare_workdir(_workdir_path(workdir), config)
    tokenizer = data_lib.load_tokenizer(tokenizer_source(config))
    cache_dir = default_cache_dir(config, workdir)
    prepared = data_lib.build_datasets(config.data, tokenizer, stage=config.stage, cache_dir=cache_dir)
    return run_training(config, workdir, prepared, tokenizer=tokenizer)


def run_training(config, workdir: str, prepared, *, tokenizer=None) -> TrainResult:
    """Train one stage on prepared data (any `PreparedData`, e.g. synthetic token arrays)."""
    # --- Checks and runtime ---------------------------------------------------------------------
    validate_config(config, num_responses=prepared.num_responses)
    workdir = _workdir_path(workdir)
    _prepare_workdir(workdir, config)
    mesh, rules = mesh_and_rules(config.mesh_shape, config.logical_axis_rules)
    validate_layout(config, data_parallel_size=data_parallel_size(mesh), process_count=jax.process_count())
    logger.info(
        "mesh %s over %d devices, %d processes", dict(mesh.shape), jax.device_count(), jax.process_count()
    )

    # --- Data -----------------------------------------------------------------------------------
    loader = data_lib.make_train_loader(
        prepared,
        global_batch_size=config.global_batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        layout=layout_from_config(
            config.data, row_multiple=data_parallel_size(mesh) * config.grad_accum_steps
        ),
    )
    num_steps = _num_train_steps(config, loader.steps_per_epoch)
    data_metrics = {k: float(v) for k, v in prepared.report_metrics().items()}

    # --- Model, optimizer, sharded state, reference ----------------------------------------------
    model, host_params = load_model(config.model, param_dtype=config.model.param_dtype, seed=config.seed)
    tx, schedule = make_optimizer(_optimizer_config(config, num_steps))
    state, state_shardings, abstract_state = create_train_state(
        model, host_params, tx, mesh, rules, seed=config.seed
    )
    has_reference = uses_reference(config.loss, reference_free=config.reference_free)
    reference = None
    if has_reference:
        if config.reference.name_or_path:
            _, ref_host = load_model(
                config.model,
                param_dtype=config.reference.param_dtype,
                seed=config.seed,
                name_or_path=config.reference.name_or_path,
            )
        else:
            ref_host = host_params  # the initial policy, as in the paper
        reference = place_reference(ref_host, state_shardings.params, config.reference.param_dtype)
    del host_params

    # --- Restore --------------------------------------------------------------------------------
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        save_every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints,
    )
    latest = checkpointer.latest_step()
    if latest is not None:
        state, position = checkpointer.restore(latest, abstract_state)
        loader.check_position(position)
        logger.info("resumed from step %d in %s", latest, checkpointer.directory)
    start_step = int(jax.device_get(state.step))

    # --- Steps ----------------------------------------------------------------------------------
    apply_fn = make_apply_fn(model)

    # Passes without gradients use the micro-batch size: it is known to fit.
    eval_batch_size = config.eval_batch_size or config.global_batch_size // config.grad_accum_steps
    if has_reference and config.reference.precompute_logps:
        prepared = precompute_reference_logps(
            prepared, apply_fn, reference, config, mesh, rules, eval_batch_size
        )
        loader = loader.with_data(prepared)
        reference, has_reference = None, False  # freed: the logps travel with the batches
    first_batch = make_global_batch(loader.batch(start_step), mesh)
    train_step = jit_train_step(
        apply_fn, config, state_shardings, first_batch, mesh, rules, has_reference=has_reference
    )
    eval_step = jit_eval_step(apply_fn, config, mesh, rules, has_reference=has_reference)

    def run_eval():
        return evaluate(
            eval_step, state.params, reference, prepared, eval_batch_size, mesh, pass_layout(config, mesh)
        )

    # --- Loop -----------------------------------------------------------------------------------
    writer = MetricsWriter(
        str(workdir), tensorboard=config.tensorboard, wandb_project=config.wandb_project, config=config
    )
    tokens_per_step = config.global_batch_size * prepared.num_responses * prepared.max_length
    throughput = Throughput(model.config.num_params(), tokens_per_step, 8 if has_reference else 6)
    previous_handlers = install_preemption_handler()
    steps_per_eval = max(1, config.eval_every_examples // config.global_batch_size)
    progress = _progress_bar(config, start_step, num_steps)
    pending, real_tokens, previous, last_logged, last_eval = [], [], None, {}, {}
    batch = first_batch
    step = start_step
    logger.info("training steps %d..%d (%d per epoch)", start_step, num_steps, loader.steps_per_epoch)
    while step < num_steps:
        state, metrics = train_step(state, reference, batch)
        step += 1
        # Check the previous step's flag now: it is done, so this costs no pipeline stall.
        if previous is not None:
            _check_finite(previous, step - 1, config)
        previous = metrics
        pending.append(metrics)
        real_tokens.append(loader.real_tokens(step - 1))
        if step < num_steps:
            batch = make_global_batch(loader.batch(step), mesh)
        if step % config.log_every_steps == 0 or step == num_steps:
            # Tokens the model computes for real examples (no padding; a shared prompt once).
            data_metrics["data/real_tokens_per_step"] = sum(real_tokens) / len(real_tokens)
            last_logged = _log_train(writer, pending, step, schedule, throughput, data_metrics)
            data_metrics = {}
            pending, real_tokens = [], []
        if step % steps_per_eval == 0 or step == num_steps:
            last_eval = run_eval()
            writer.write(step, {f"eval/{k}": v for k, v in last_eval.items()})
            if config.eval_samples and tokenizer is not None:
                samples = side_by_side_samples(
                    model, state.params, reference, prepared, tokenizer, config, step
                )
                write_samples(workdir, step, samples)
        checkpointer.save(step, state, loader.position(step))
        if should_stop_for_preemption(step, check_every_steps=config.log_every_steps):
            checkpointer.save(step, state, loader.position(step), force=True)
            logger.warning("preemption signal: saved step %d and stopping", step)
            break
        if progress is not None:
            progress.update(1)
            progress.set_postfix(
                {k.split("/")[-1]: f"{v:.3g}" for k, v in last_logged.items() if k.startswith("perf/")}
            )
    if previous is not None:
        _check_finite(previous, step, config)
    checkpointer.save(step, state, loader.position(step), force=True)
    checkpointer.close()
    writer.close()
    for signum, handler in previous_handlers.items():
        signal.signal(signum, handler)
    if progress is not None:
        progress.close()

    # --- Export ---------------------------------------------------------------------------------
    if step == num_steps:
        _finish(config, workdir, model, state, tokenizer)
    return TrainResult(last_logged, last_eval, model, state.params, step)


def _optimizer_config(config, num_steps: int):
    opt = config.copy_and_resolve_references()
    with opt.unlocked():
        opt.total_steps = num_steps
    return opt


def _check_finite(metrics, step: int, config) -> None:
    if float(jax.device_get(metrics["nonfinite"][0])) == 0.0:
        return
    floats = metrics_to_floats(metrics)
    message = (
        f"non-finite loss or gradient at step {step} (loss={floats.get('loss')}, grad_norm={floats.get('grad_norm')}); "
        "the update was skipped"
    )
    if config.nonfinite_policy == "stop":
        raise NonFiniteLossError(
            message + ". Stopping (set config.nonfinite_policy='skip' to skip such steps)."
        )
    logger.warning(message)


def _log_train(writer, pending, step, schedule, throughput, data_metrics) -> dict[str, float]:
    summed = merge_metrics(*jax.device_get(pending))
    floats = metrics_to_floats(summed, skip_empty=True)
    floats["nonfinite"] = float(summed["nonfinite"][0])  # skipped steps in this interval, not a mean
    floats["learning_rate"] = float(schedule(step - 1))
    floats.update(throughput.update(step))
    floats.update(data_metrics)
    writer.write(step, floats)
    return floats


def _progress_bar(config, start: int, total: int):
    if not config.progress_bar or jax.process_index() != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)


def _finish(config, workdir, model, state, tokenizer) -> None:
    params = gather_to_host(state.params) if config.export_hf else None
    if jax.process_index() == 0:
        if config.export_hf:
            to_hf(model, params, str(workdir / EXPORT_DIRNAME), tokenizer=tokenizer)
        marker = {"step": int(jax.device_get(state.step)), "time": time.time()}
        (workdir / FINISHED_MARKER).write_text(json.dumps(marker))
    multihost_utils.sync_global_devices("dpo_jax_finished")
