"""The policy a path holds, to sample from: a Hugging Face model (a directory, a hub name, a finished
workdir's export), or else the newest readable Orbax checkpoint of a workdir that has no export yet (a
run still training, stopped by preemption or killed).

From a checkpoint, the model is rebuilt from the run's config (WORKDIR/run_config.json, architecture
only: `describe_model` downloads nothing) and only the policy's params are read (no optimizer state).
Either way the params land where the sampler's decode program wants them on the sampling mesh
(`dpo_jax.sampling.sharded.decode_placement`: replicated over the batch axes, split over tensor),
whatever mesh the run trained on. The checkpoint directory is opened
read-only, so a run still writing to it is not disturbed: its in-flight save is not cleaned up, and an
unreadable step is skipped with a warning and left where it is.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import Any

import jax

from dpo_jax import MissingInputError, UserError
from dpo_jax.analysis.runs import read_run_config
from dpo_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer
from dpo_jax.checkpoint.checkpointer import UnreadableCheckpointError
from dpo_jax.models import abstract_params, build_model, from_hf
from dpo_jax.models.loading import EXPORT_DIRNAME, describe_model, resolve_model_path, tokenizer_source
from dpo_jax.sampling.sharded import decode_placement, default_mesh, place_params

logger = logging.getLogger("dpo_jax")

# Where the policy sits inside a checkpoint's `state.params`, per stage. PPO trains one module of two
# halves (dpo_jax.ppo.model: POLICY, VALUE); a reward model is not a language model to sample from.
_POLICY_PARAMS_PATH = {"sft": (), "dpo": (), "ppo": ("policy",)}


@dataclasses.dataclass(frozen=True)
class SavedPolicy:
    model: Any
    params: Any
    tokenizer: str  # the tokenizer that goes with it: a directory or a hub name
    source: str  # where the params came from, for the log


def _has_hf_model(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, *parts, "config.json")) for parts in ((), (EXPORT_DIRNAME,)))


def load_saved_policy(path: str, *, dtype: str = "float32", mesh=None) -> SavedPolicy:
    """The model and params `path` holds: its Hugging Face weights if it has them, else the newest
    readable checkpoint of the workdir `path`; fails naming both places when it has neither. The
    params are laid out for decoding on `mesh` (default: every device on the data axis)."""
    mesh = default_mesh() if mesh is None else mesh
    if not os.path.isdir(path) or _has_hf_model(path):
        model_dir = resolve_model_path(path)
        model, params = from_hf(model_dir, dtype=dtype)
        params = place_params(params, decode_placement(model, mesh))
        return SavedPolicy(model, params, tokenizer=model_dir, source=model_dir)
    return _from_checkpoint(path, dtype, mesh)


def _from_checkpoint(workdir: str, dtype: str, mesh) -> SavedPolicy:
    checkpoints = os.path.join(workdir, CHECKPOINT_DIRNAME)
    looked_for = (
        f"looked for an exported policy ({os.path.join(workdir, EXPORT_DIRNAME, 'config.json')}) and for a "
        f"checkpoint ({checkpoints}/<step>)"
    )
    nothing = MissingInputError(f"{workdir}: nothing to sample from: {looked_for}; found neither")
    if not os.path.isdir(checkpoints) or not any(name.isdigit() for name in os.listdir(checkpoints)):
        raise nothing  # said before Orbax opens the directory (and warns about it)
    with Checkpointer.reader(checkpoints) as reader:
        if not reader.all_steps():  # at most a save a crash cut short
            raise nothing
        model, target, params_path, tokenizer = _restore_target(workdir, dtype, mesh)
        try:
            found = reader.restore_latest_readable(target, params_path=params_path)
        except UnreadableCheckpointError as error:
            raise UnreadableCheckpointError(f"{workdir}: nothing to sample from: {looked_for}; {error}") from error
    step, params, _ = found
    logger.info("%s has no export: sampling from its checkpoint at step %d", workdir, step)
    return SavedPolicy(model, params, tokenizer=tokenizer, source=f"{checkpoints}/{step}")


def _restore_target(workdir: str, dtype: str, mesh):
    """(model, abstract params laid out for decoding on `mesh`, where the policy sits in the saved
    params, tokenizer) of the run that wrote `workdir`, from its run_config.json."""
    config = read_run_config(workdir)
    if config is None:
        raise MissingInputError(
            f"{workdir} has checkpoints but no run_config.json: the model they were saved from is unknown"
        )
    if config.stage not in _POLICY_PARAMS_PATH:
        raise UserError(f"{workdir} trained stage={config.stage!r}: not a language model to sample from")
    model_cfg = config.model.copy_and_resolve_references()
    model_cfg.dtype = dtype
    model = build_model(describe_model(model_cfg, param_dtype=model_cfg.param_dtype))
    shardings = decode_placement(model, mesh).shardings
    target = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract_params(model),
        shardings,
    )
    return model, target, _POLICY_PARAMS_PATH[config.stage], tokenizer_source(config)


def policies_over_training(
    workdir: str, every: int, *, dtype: str = "float32", mesh=None
) -> Iterator[tuple[int, SavedPolicy | None, str]]:
    """(step, policy, "") for each saved checkpoint whose step is a multiple of `every` (1: all), oldest
    first, read one at a time (params only, read-only as above); (step, None, reason) for a step that
    does not read, which the caller reports. The run must have kept them (config.keep_checkpoints)."""
    checkpoints = os.path.join(workdir, CHECKPOINT_DIRNAME)
    if not os.path.isdir(checkpoints):
        raise MissingInputError(f"{workdir}: no checkpoints ({checkpoints}) to evaluate over training")
    with Checkpointer.reader(checkpoints) as reader:
        steps = [step for step in reader.all_steps() if step % every == 0]
        if not steps:
            raise MissingInputError(
                f"{checkpoints}: no checkpoint at a multiple of {every} steps (saved: {reader.all_steps()})"
            )
        mesh = default_mesh() if mesh is None else mesh
        model, target, params_path, tokenizer = _restore_target(workdir, dtype, mesh)
        for step in steps:
            try:
                params, _ = reader.restore(step, target, params_path=params_path)
            except UserError:  # another model's checkpoint: no step of this run will read
                raise
            except Exception as error:  # Orbax and TensorStore raise many types for a damaged file
                logger.warning(
                    "checkpoint step %d in %s is unreadable (%s): skipped", step, checkpoints, error
                )
                yield step, None, f"{type(error).__name__}: {str(error)[:200]}"
                continue
            yield step, SavedPolicy(model, params, tokenizer=tokenizer, source=f"{checkpoints}/{step}"), ""
