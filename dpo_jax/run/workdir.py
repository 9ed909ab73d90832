"""A run's workdir: writable, held by one run at a time, and resumed only with the config it was started with.

- `workdir_path` is the workdir as a path (local ones absolute); `prepare_workdir` makes the directory
  and proves it writable.
- `WorkdirLock` is the lock file WORKDIR/RUN_LOCK: one per run, however many hosts the run has. Process 0
  takes it and tells the others whether it got it, so every process of a second run on the same
  workdir stops with the same message. A lock left by a killed run is stale, and taken over with a
  warning, when its process is gone (same host) or its heartbeat, refreshed by a background thread,
  is older than `stale_after_s` (another host, whose processes cannot be seen).
- `optimisation_config` / `config_changes`: the fields of a config that shape the optimisation, recorded
  in every checkpoint and compared on resume. Which fields those are is `dpo_jax.config.fields`' table
  (the fields that change the training); the others (logging, evaluation, checkpoint cadence, the mesh,
  the attention kernel, remat) may change between the runs of one training.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from dpo_jax import UnwritableError, UserError
from dpo_jax.config.fields import changes_training, training_fields

logger = logging.getLogger("dpo_jax")

LOCK_FILENAME = "RUN_LOCK"
RUN_CONFIG_FILENAME = "run_config.json"

RUN_LENGTH_FIELDS = frozenset({"num_train_steps", "num_epochs"})


def workdir_path(workdir: str) -> epath.Path:
    """Local paths made absolute (Orbax needs it); gs:// and other URLs as they are."""
    return epath.Path(workdir if "://" in str(workdir) else os.path.abspath(workdir))


def prepare_workdir(workdir: epath.Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_probe_{jax.process_index()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UnwritableError(f"workdir {str(workdir)!r} is not writable: {e}") from e


def write_run_config(workdir: epath.Path, config) -> None:
    if jax.process_index() == 0:
        (workdir / RUN_CONFIG_FILENAME).write_text(config.to_json_best_effort(indent=2))


# --- The lock -------------------------------------------------------------------------------------


class WorkdirLockedError(UserError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class WorkdirLock:
    """WORKDIR/RUN_LOCK, held from `acquire()` to `release()`; re-entrant within one process."""

    _held: dict[str, int] = {}  # lock path -> nesting depth, in this process

    def __init__(
        self,
        workdir: epath.Path,
        *,
        stale_after_s: float = 120.0,
        heartbeat_s: float = 15.0,
        single_process: bool = False,
    ):
        # single_process: a driver that never starts a JAX backend (the recipe runner, whose stages
        # need the accelerator to themselves) takes the lock without asking JAX who process 0 is.
        self.single_process = single_process
        self.path = epath.Path(workdir) / LOCK_FILENAME
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

    def acquire(self) -> None:
        key = str(self.path)
        if key in self._held:
            self._held[key] += 1
            return
        refusal = self._try_take() if self._leads() else ""
        if not self.single_process and jax.process_count() > 1:
            refusal = _broadcast_text(refusal)
        if refusal:
            raise WorkdirLockedError(refusal)
        self._held[key] = 1
        if self._leads():
            self._thread = threading.Thread(target=self._beat, name="dpo_jax-workdir-lock", daemon=True)
            self._thread.start()

    def release(self) -> None:
        key = str(self.path)
        if key not in self._held:
            return
        self._held[key] -= 1
        if self._held[key]:
            return
        del self._held[key]
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._leads() and self._holder() == self._owner:
            self.path.unlink()

    def _leads(self) -> bool:
        return self.single_process or jax.process_index() == 0

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return {k: holder.get(k) for k in self._owner}

    def _try_take(self) -> str:
        """'' when this process now holds the lock, else why not."""
        holder = self._holder()
        if holder is not None:
            age = time.time() - self.path.stat().mtime
            alive = age < self.stale_after_s
            if holder["host"] == self._owner["host"]:
                alive = alive and _pid_alive(int(holder["pid"]))
            if alive:
                return (
                    f"workdir {str(self.path.parent)!r} is in use by another run (pid {holder['pid']} on "
                    f"{holder['host']}, heartbeat {age:.0f} s ago; {self.path} holds it). Wait for it to end, "
                    f"use another workdir, or delete {self.path} if that run is dead."
                )
            logger.warning(
                "taking over the stale lock %s of pid %s on %s (heartbeat %.0f s ago)",
                self.path,
                holder["pid"],
                holder["host"],
                age,
            )
        if "://" in str(self.path):  # object stores have no exclusive create: check-then-write
            self.path.write_text(json.dumps(self._owner))
            return ""
        if holder is not None:
            self.path.unlink(missing_ok=True)
        try:
            fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return f"workdir {str(self.path.parent)!r} was just taken by another run ({self.path})"
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(self._owner))
        return ""

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if "://" in str(self.path):
                    self.path.write_text(json.dumps(self._owner))
                else:
                    os.utime(str(self.path))
            except OSError as error:
                logger.warning("could not refresh %s: %s", self.path, error)


def _broadcast_text(text: str, max_bytes: int = 2048) -> str:
    """Process 0's `text` on every process (a collective: every process must call it)."""
    buffer = np.zeros((max_bytes,), np.uint8)
    encoded = text.encode()[:max_bytes]
    buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(received[received != 0].astype(np.uint8)).decode(errors="replace")


# --- The config a checkpoint was trained with ----------------------------------------------------


def optimisation_config(config) -> dict[str, Any]:
    """The config's fields that shape the optimisation, dotted and JSON-safe (recorded in checkpoints)."""
    return training_fields(config)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'field: saved -> current' for every optimisation field that differs (added or removed included)."""
    missing = object()
    changes = []
    # The run's length shapes the updates only through a decaying schedule: a constant one may be extended.
    length_matters = "constant" not in (saved.get("lr_schedule"), current.get("lr_schedule"))
    for key in sorted(saved.keys() | current.keys()):
        if not changes_training(key) or (key in RUN_LENGTH_FIELDS and not length_matters):
            continue
        before, after = saved.get(key, missing), current.get(key, missing)
        if before != after:
            show = lambda value: "(absent)" if value is missing else json.dumps(value)  # noqa: E731
            changes.append(f"{key}: {show(before)} -> {show(after)}")
    return changes
