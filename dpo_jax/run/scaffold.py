"""The run scaffold: what every stage's run needs around its steps, owned in one place.

    with RunScaffold(config, workdir) as run:       # workdir made, locked, checkpointer and SIGTERM handler up
        restored = run.restore(abstract_state)      # the newest readable step, its settings checked
        outcome = run_steps(run, stage, state, ...) # the one step loop (`run.loop`)

The loop calls the rest: `run.metrics_writer(start_step)` (rows at or past a restored step dropped
first), `run.save(step, state, position)`, `run.preempted(...)` and `run.finish(step, export)` (the
export and the FINISHED marker, process 0).

SFT, DPO and the reward model (`training.loop`), PPO (`ppo.loop`) and the synthetic experiment's
stages (through `training.run_training`) all run inside it and through its one loop, so each gets the
same lock (a second run on the workdir is refused with one line), the same resume (each metrics step
written once, a checkpoint trained with other settings refused), the same preemption (SIGTERM -> save
-> `Preempted`, which the command turns into exit status 75) and the same closing of the checkpointer
on every exit path. Mistakes in the user's input are `UserError`s; the command prints them as one
`error:` line, exit 2.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from dpo_jax import UserError
from dpo_jax.checkpoint import (
    CHECKPOINT_DIRNAME,
    PREEMPTED_EXIT,
    Checkpointer,
    install_preemption_handler,
    should_stop_for_preemption,
)
from dpo_jax.metrics.writer import MetricsWriter
from dpo_jax.models.loading import EXPORT_DIRNAME
from dpo_jax.run.workdir import (
    WorkdirLock,
    config_changes,
    optimisation_config,
    prepare_workdir,
    workdir_path,
    write_run_config,
)

logger = logging.getLogger("dpo_jax")

FINISHED_MARKER = "FINISHED"  # launch/sweep.py skips workdirs that have it


class Preempted(Exception):
    """A run stopped by SIGTERM after saving; the command exits with PREEMPTED_EXIT (75)."""


def optimizer_config(config, total_steps: int):
    """The config with `total_steps` (the schedule's length in optimizer updates) filled in."""
    resolved = config.copy_and_resolve_references()
    with resolved.unlocked():
        resolved.total_steps = total_steps
    return resolved


def applied_learning_rate(schedule, opt_state, last_metrics) -> float:
    """The learning rate of the last update: the schedule at the optimizer's own update count.

    A skipped (non-finite) step leaves the optimizer state, and so its count, unchanged while the
    step counter advances, so schedule(step - 1) would run ahead of what the optimizer applies.
    `last_metrics["nonfinite"]`: the last update's skip flag (a (sum, count) pair or a number).
    """
    counts = [
        leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
        if path and getattr(path[-1], "name", None) == "count"
    ]
    if not counts:
        raise ValueError("the optimizer state has no update count")
    count = int(jax.device_get(counts[0]))
    skipped = float(np.ravel(jax.device_get(last_metrics["nonfinite"]))[0]) > 0
    # After an applied update the count has advanced past it; after a skipped one it names the next update.
    return float(schedule(count if skipped else count - 1))


class RunScaffold:
    """One stage's run on one workdir: lock, checkpointer, preemption handler, metrics, FINISHED marker.

    A context manager: entering makes and locks the workdir (a second run on it is refused) and opens
    the checkpointer; leaving closes the checkpointer (after an error too, so the error surfaces alone
    and a save in flight is finalised), restores the signal handlers and releases the lock.
    """

    def __init__(self, config, workdir: str | epath.Path):
        self.config = config
        self.workdir = workdir_path(str(workdir))
        self.recorded_config = {"config": optimisation_config(config)}
        self.checkpointer: Checkpointer | None = None
        self._lock = WorkdirLock(self.workdir)
        self._handlers: dict[int, Any] = {}
        self._writer: MetricsWriter | None = None

    def __enter__(self) -> RunScaffold:
        prepare_workdir(self.workdir)
        self._lock.acquire()
        try:
            self.checkpointer = Checkpointer(
                self.workdir / CHECKPOINT_DIRNAME,
                save_every_steps=self.config.checkpoint_every_steps,
                keep=self.config.keep_checkpoints,
            )
        except BaseException:
            self._lock.release()
            raise
        self._handlers = install_preemption_handler()
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler)
            if error_type is None:
                self.checkpointer.close()
            else:
                try:
                    self.checkpointer.close()
                except Exception as close_error:  # the error in flight is the one to show
                    logger.warning("closing the checkpointer after an error failed too: %s", close_error)
        finally:
            self._lock.release()

    def restore(self, abstract_state) -> tuple[int, Any, dict] | None:
        """(step, state, data item) of the newest readable checkpoint, after checking it was trained
        with this config's settings (`config.allow_config_change` lets it through with a warning);
        None when there is none. Writes the run's config (after the check: a refused run keeps it)."""
        found = self.checkpointer.restore_latest_readable(abstract_state)
        if found is not None:
            step, _, data_item = found
            saved = data_item.get("metadata", {}).get("config")
            changes = [] if saved is None else config_changes(saved, self.recorded_config["config"])
            if changes and not self.config.allow_config_change:
                raise UserError(
                    f"{self.checkpointer.directory} (step {step}) was trained with other settings; resuming "
                    "would silently mix two runs:\n  "
                    + "\n  ".join(changes)
                    + "\nUse a new workdir, restore those values, or pass --config.allow_config_change=True."
                )
            for change in changes:
                logger.warning("resuming with a changed setting (allow_config_change): %s", change)
            logger.info("resumed from step %d in %s", step, self.checkpointer.directory)
        write_run_config(self.workdir, self.config)
        return found

    def metrics_writer(self, start_step: int) -> MetricsWriter:
        """WORKDIR/metrics.jsonl (and TensorBoard / W&B) from `start_step` on: rows of later steps, left
        by a run killed after logging them but before their checkpoint, are dropped, so each step is
        written once. Closed with the scaffold."""
        config = self.config
        self._writer = MetricsWriter(
            str(self.workdir),
            tensorboard=config.tensorboard,
            wandb_project=config.wandb_project,
            config=config,
            resume_step=start_step,
        )
        return self._writer

    def save(self, step: int, state, position: dict, *, force: bool = False) -> None:
        """A checkpoint of `state` and the data `position` (every `checkpoint_every_steps`, or now)."""
        self.checkpointer.save(step, state, position, force=force, metadata=self.recorded_config)

    def preempted(self, step: int, state, position: dict, *, num_steps: int) -> bool:
        """True (after saving step `step` of `num_steps`) when SIGTERM asked the run to stop."""
        if not should_stop_for_preemption(step, check_every_steps=self.config.log_every_steps):
            return False
        self.save(step, state, position, force=True)
        logger.warning(
            "preempted: saved step %d of %d; exit status %d asks the scheduler to requeue",
            step,
            num_steps,
            PREEMPTED_EXIT,
        )
        return True

    def finish(self, step: int, export: Callable[[], None] | None = None) -> None:
        """The finished run's export (`export` runs on process 0) and the FINISHED marker sweeps skip."""
        self.checkpointer.wait_until_finished()
        if jax.process_index() == 0:
            if export is not None:
                export()
            marker = {"step": int(step), "time": time.time()}
            (self.workdir / FINISHED_MARKER).write_text(json.dumps(marker))
            exported = self.workdir / EXPORT_DIRNAME
            logger.info(
                "finished: step %d; %s",
                step,
                f"exported to {exported}"
                if exported.exists()
                else f"checkpoints in {self.checkpointer.directory}",
            )
        multihost_utils.sync_global_devices("dpo_jax_finished")
