"""Saving and resuming training: an Orbax CheckpointManager wrapper.

A checkpoint holds two items: "state" (the TrainState pytree) and "data" (a small JSON dict with the
data loader position, a signature of the model's parameter shapes and free-form metadata). Restores
go onto an abstract target that carries shardings, so a checkpoint resumes on any mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from dpo_jax import MissingInputError, UnwritableError, UserError
from dpo_jax.checkpoint.disk_full import (
    CheckpointDiskFullError,
    details_path,
    divert_disk_full_logs,
    is_disk_full,
    mount_point,
    write_details,
)

logger = logging.getLogger("dpo_jax")

CHECKPOINT_DIRNAME = "checkpoints"  # a run's checkpoints: WORKDIR/checkpoints/<step>
STATE_ITEM = "state"
DATA_ITEM = "data"
# Orbax writes a step into a temporary directory and renames it when complete; a crash mid-save leaves
# one behind. Its name is "<step>.orbax-checkpoint-tmp-<timestamp>" in older Orbax releases and
# "<step>.orbax-checkpoint-tmp" in 0.12.8: Orbax's own suffix constant is in both.
TMP_MARKER = getattr(ocp.path.step, "TMP_DIR_SUFFIX", ".orbax-checkpoint-tmp")
# Unreadable steps are moved here (beside the checkpoint directory), never deleted: the user decides.
UNREADABLE_SUFFIX = "_unreadable"


class UnreadableCheckpointError(UserError):
    """No saved step of a checkpoint directory can be read."""


def _param_path_name(path: tuple) -> str:
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
    return "/".join(parts)


def model_signature(state: Any) -> dict[str, list[int]]:
    """Parameter path -> shape of `state.params` (or of `state` itself if it has no params)."""
    params = getattr(state, "params", state)
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return {_param_path_name(path): [int(size) for size in leaf.shape] for path, leaf in flat}


def _signature_mismatches(saved: Mapping[str, list[int]], expected: Mapping[str, list[int]]) -> list[str]:
    problems = [f"{name}: missing from the checkpoint" for name in sorted(expected.keys() - saved.keys())]
    problems += [f"{name}: in the checkpoint only" for name in sorted(saved.keys() - expected.keys())]
    problems += [
        f"{name}: checkpoint shape {tuple(saved[name])} != model shape {tuple(expected[name])}"
        for name in sorted(expected.keys() & saved.keys())
        if list(saved[name]) != list(expected[name])
    ]
    return problems


class _SignatureMismatch(UserError):
    pass


def _quiet_abandoned_reads() -> None:
    """Silences the noise a damaged step's failed restore leaves (installed once per process).

    The restore fails with reads of its other arrays still in flight; TensorStore completes them later
    into the event loop Orbax has closed meanwhile, and each reports `RuntimeError: Event loop is closed`
    through `sys.unraisablehook`: dozens of tracebacks burying the one warning that names the bad step.
    Exactly those are dropped; anything else reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "dpo_jax_quiet_abandoned_reads", False):
        return

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook.dpo_jax_quiet_abandoned_reads = True
    sys.unraisablehook = hook


def _settle_abandoned_reads() -> None:
    """Marks every read a failed restore abandoned as finished with, so none reports later.

    Orbax runs a restore on an event loop it closes as soon as the first array fails; the reads of the
    other arrays are left as asyncio tasks and futures of that closed loop. Whether one of them had
    already failed (and, unretrieved, prints "Task exception was never retrieved" with a traceback when
    it is garbage-collected) or was still pending depended on timing. A closed loop runs nothing more,
    so once the restore has returned their state is final: a failed one's exception is retrieved here,
    a pending one is told not to complain when destroyed. Only objects of closed loops are touched.
    """
    for obj in gc.get_objects():
        if not isinstance(obj, asyncio.Future) or not obj.get_loop().is_closed():
            continue
        if obj.done():
            if not obj.cancelled():
                obj.exception()  # marks it retrieved
        elif isinstance(obj, asyncio.Task):
            obj._log_destroy_pending = False


def _short_reason(error: Exception, limit: int = 300) -> str:
    """The first line of a restore error, without the TensorStore spec that follows it (kilobytes of JSON)."""
    text = str(error).splitlines()[0] if str(error) else ""
    text = text.split(" [tensorstore_spec", 1)[0]
    text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Orbax's default on CPUs and TPUs is a replica-parallel save: an array replicated over N devices is cut
# into N slices, each copied to the host from another replica (a slicing program per array shape, then N
# transfers), so that replicas, links and hosts share the copying and writing of large arrays. A slice has
# a fixed cost, which for small arrays is the whole cost: a tiny GPT-2 train state on 8 CPU devices took
# 1352 transfers per save instead of 176, and the save call 0.36-0.8 s instead of 0.06-0.25 s (Orbax
# 0.12.8, 2-core CPU). So slices under this size are not cut: the array is copied once, from one replica.
# The threshold is ours (Orbax leaves it unset); it has not been tuned on TPUs.
REPLICA_PARALLEL_MIN_SLICE_BYTES = 1 << 20


def _cut_only_large_arrays_across_replicas() -> None:
    """Registers Orbax's array handler with `REPLICA_PARALLEL_MIN_SLICE_BYTES`. The files are the same
    either way: a checkpoint saved one way restores the other way (tests/checkpoint/test_checkpointer.py)."""
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if (
        type(current) is not ocp.type_handlers.ArrayHandler  # a handler someone registered: theirs
        or not getattr(current, "_use_replica_parallel", False)  # not cutting (Orbax's default on GPUs)
        or getattr(current, "_min_slice_bytes_for_replica_parallel", None) is not None  # set already
    ):
        return
    ocp.type_handlers.register_type_handler(
        jax.Array,
        ocp.type_handlers.ArrayHandler(
            use_replica_parallel=True,
            min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_SLICE_BYTES,
            array_metadata_store=getattr(current, "_array_metadata_store", None),
        ),
        override=True,
    )


def _require_writable(directory: epath.Path) -> None:
    probe = directory / f".write_probe_{jax.process_index()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UnwritableError(f"Checkpoint directory {str(directory)!r} is not writable: {error}") from error


class Checkpointer:
    """Keeps the latest `keep` checkpoints under `directory`, one every `save_every_steps` steps.

    Saves are atomic: Orbax writes each step into a temporary directory and finalises it (a rename on
    POSIX file systems, a commit marker on GCS) only once every process has finished, so a crash
    mid-save never leaves a checkpoint that looks complete; unfinished ones are ignored on restore.
    With `async_save` the arrays are copied to host memory and written in the background while
    training continues; call `wait_until_finished()` (or `close()`) before the process exits.
    """

    def __init__(
        self,
        directory: str | epath.Path,
        *,
        save_every_steps: int,
        keep: int,
        async_save: bool = True,
        read_only: bool = False,
    ):
        if save_every_steps < 1:
            raise UserError(f"save_every_steps must be >= 1, got {save_every_steps}.")
        if keep < 1:
            raise UserError(f"keep must be >= 1, got {keep}.")
        self.directory = epath.Path(directory)
        self.save_every_steps = save_every_steps
        self.read_only = read_only
        self._saving_step: int | None = None  # the save that may still be in flight
        self._previous_step: int | None = None  # the save before it
        self._disk_full: CheckpointDiskFullError | None = None
        if not read_only:
            divert_disk_full_logs()
            _require_writable(self.directory)
            stale = sorted(path.name for path in self.directory.iterdir() if TMP_MARKER in path.name)
            if stale and jax.process_index() == 0:
                logger.warning(
                    "removing %d unfinished checkpoint(s) left by a crash in %s: %s",
                    len(stale),
                    self.directory,
                    ", ".join(stale),
                )
        _cut_only_large_arrays_across_replicas()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=not read_only,
            # A reader may look at the directory of a run still training: its in-flight save is not stale.
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(STATE_ITEM, DATA_ITEM)
        )

    @classmethod
    def reader(cls, directory: str | epath.Path) -> Checkpointer:
        """A read-only view of `directory` (e.g. to sample from a run that is still training): it never
        writes, never cleans up in-flight saves, and skips unreadable steps without moving them."""
        if not epath.Path(directory).is_dir():
            raise MissingInputError(f"no checkpoint directory {str(directory)!r}")
        return cls(directory, save_every_steps=1, keep=1, async_save=False, read_only=True)

    def save(
        self,
        step: int,
        state: Any,
        data_position: Any,
        *,
        force: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Saves at multiples of save_every_steps, or any step with force; returns whether it saved.

        `data_position` and `metadata` must be JSON-serialisable. A step that is already saved (a
        forced preemption save right after a periodic one) is not written twice.
        """
        if self.read_only:
            raise RuntimeError(f"{self.directory} was opened read-only: it cannot save")
        step = int(step)
        if not force and step % self.save_every_steps:
            return False
        if step in self._manager.all_steps():
            return False
        data_item = {
            "data_position": data_position,
            "model_signature": model_signature(state),
            "metadata": dict(metadata or {}),
        }
        try:
            json.dumps(data_item)
        except TypeError as error:
            raise TypeError(
                f"Checkpoint step {step}: data_position {data_position!r} and metadata must be "
                f"JSON-serialisable: {error}"
            ) from error
        # force=True: the cadence was decided above, so it does not depend on the save-decision
        # policy defaults of the installed Orbax version.
        self._previous_step, self._saving_step = self._saving_step, step
        with self._reporting_disk_full():  # the previous async save's failure surfaces here too
            return self._manager.save(
                step,
                args=ocp.args.Composite(
                    **{STATE_ITEM: ocp.args.StandardSave(state), DATA_ITEM: ocp.args.JsonSave(data_item)}
                ),
                force=True,
            )

    def _unfinished_step(self) -> int | None:
        """The save a failure belongs to when its text names none: the async save before the one being
        started if that one never completed (its failure surfaces when the next save begins), else
        the one being started."""
        complete = set(self.all_steps())
        if self._previous_step is not None and self._previous_step not in complete:
            return self._previous_step
        return self._saving_step

    @contextlib.contextmanager
    def _reporting_disk_full(self):
        """Turns a save's full-disk failure (raised now or by the async save in flight) into one
        `CheckpointDiskFullError`; Orbax's details go to the details file. Raised once per checkpointer."""
        try:
            yield
        except Exception as error:
            if not is_disk_full(error):
                raise
            text = "".join(traceback.format_exception(error))
            write_details(text)
            if self._disk_full is not None:  # said once; closing after it must not say it again
                return
            # The failing save names its step in its temporary directory (an async one may be the
            # save before the one being started).
            named = re.search(rf"/(\d+){re.escape(TMP_MARKER)}", text)
            step = int(named.group(1)) if named else self._unfinished_step()
            complete = [s for s in self.all_steps() if s != step]
            self._disk_full = CheckpointDiskFullError(
                f"no space left on {mount_point(str(self.directory))} while saving step {step}; the last "
                f"complete checkpoint is step {complete[-1] if complete else 'none'} (details: {details_path()})"
            )
            raise self._disk_full from None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def _resolve_step(self, step: int | None) -> int:
        resolved = self.latest_step() if step is None else int(step)
        if resolved is None or resolved not in self._manager.all_steps():
            raise MissingInputError(
                f"No checkpoint for step {step} in {str(self.directory)!r}; saved steps: {self.all_steps()}."
            )
        return resolved

    def read_data_item(self, step: int | None = None) -> dict[str, Any]:
        """The "data" item of `step` (default: latest): data_position, model_signature, metadata."""
        step = self._resolve_step(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(**{DATA_ITEM: ocp.args.JsonRestore()}))
        return restored[DATA_ITEM]

    def restore(
        self,
        step: int | None,
        abstract_state: Any,
        *,
        data_item: dict[str, Any] | None = None,
        params_path: tuple[str, ...] | None = None,
    ) -> tuple[Any, Any]:
        """(state, data_position) of `step` (None: latest), laid out as `abstract_state` asks.

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`, e.g. from
        `sharding.abstract_sharded_state`; its shardings may come from any mesh. Fails naming the
        tensors when the checkpoint's parameter shapes differ from the target's.

        With `params_path` (a tuple of keys, () for all of them), only that subtree of the saved
        `state.params` is read, and `abstract_state` is the abstract tree of those params alone: the
        optimizer state is never loaded (a sampler needs a third of the bytes).
        """
        step = self._resolve_step(step)
        data_item = data_item if data_item is not None else self.read_data_item(step)
        saved_signature = data_item["model_signature"]
        if params_path is None:
            item_args = ocp.args.StandardRestore(abstract_state)
        else:
            prefix = "".join(f"{key}/" for key in params_path)
            saved_signature = {
                name[len(prefix) :]: shape
                for name, shape in saved_signature.items()
                if name.startswith(prefix)
            }
            target = {"params": abstract_state}
            for key in reversed(params_path):
                target["params"] = {key: target["params"]}
            item_args = ocp.args.PyTreeRestore(
                item=target,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True,
            )
        problems = _signature_mismatches(saved_signature, model_signature(abstract_state))
        if problems:
            raise _SignatureMismatch(
                f"Checkpoint step {step} in {str(self.directory)!r} was saved from a different model:\n  "
                + "\n  ".join(problems)
            )
        restored = self._manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: item_args}))[STATE_ITEM]
        if params_path is not None:
            restored = restored["params"]
            for key in params_path:
                restored = restored[key]
        return restored, data_item["data_position"]

    def restore_latest_readable(
        self, abstract_state: Any, *, params_path: tuple[str, ...] | None = None
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, data item) of the newest step that reads completely; None when nothing is saved.

        A step that fails to read (a truncated array file, a missing manifest or data item) is moved to
        `<directory>_unreadable/<step>` with a warning naming it, so that the run resumes from the
        step before it and later saves of that step number are not blocked; nothing is deleted. A
        read-only checkpointer skips it with the warning and leaves it in place. A checkpoint of a
        different model is not "unreadable": that error is raised as it is. `params_path`: as `restore`.
        """
        _quiet_abandoned_reads()  # before the first read: a failing one reports while it unwinds
        failures = []
        for step in reversed(self.all_steps()):
            try:
                data_item = self.read_data_item(step)
                state, _ = self.restore(step, abstract_state, data_item=data_item, params_path=params_path)
            except _SignatureMismatch:
                raise
            except Exception as error:  # Orbax and TensorStore raise many types for a damaged file
                _settle_abandoned_reads()
                reason = _short_reason(error)
                failures.append(f"step {step}: {reason}")
                if self.read_only:
                    logger.warning(
                        "checkpoint step %d in %s is unreadable (%s): skipped, left in place",
                        step,
                        self.directory,
                        reason,
                    )
                else:
                    self._set_aside(step, reason)
                continue
            return step, state, data_item
        if failures:
            where = "left in place" if self.read_only else f"moved to {str(self._unreadable_directory())!r}"
            raise UnreadableCheckpointError(
                f"no checkpoint in {str(self.directory)!r} is readable ({where}):\n  " + "\n  ".join(failures)
            )
        return None

    def _unreadable_directory(self) -> epath.Path:
        return self.directory.parent / (self.directory.name + UNREADABLE_SUFFIX)

    def _set_aside(self, step: int, reason: str) -> None:
        target = self._unreadable_directory() / str(step)
        if jax.process_index() == 0:
            logger.warning(
                "checkpoint step %d in %s is unreadable (%s): moved to %s, falling back to an earlier step",
                step,
                self.directory,
                reason,
                target,
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # set aside before under the same step number: keep both
                target = target.parent / f"{step}.{len(list(target.parent.iterdir()))}"
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"dpo_jax_set_aside_{step}")
        self._manager.reload()

    def wait_until_finished(self) -> None:
        with self._reporting_disk_full():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves, then releases Orbax's background resources."""
        with self._reporting_disk_full():
            self._manager.wait_until_finished()
        with self._reporting_disk_full():
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
