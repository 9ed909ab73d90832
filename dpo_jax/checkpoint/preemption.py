"""The preemption signal: SIGTERM (TPU VM preemption, Slurm time limit) raises a flag that the training
loop polls, agreed across hosts, to save a checkpoint and exit cleanly."""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

# The exit status of a run stopped by SIGTERM after saving: EX_TEMPFAIL from sysexits.h ("try again
# later"), distinct from 0 (finished), 1 (failed) and 2 (a user error), so a scheduler can requeue it.
PREEMPTED_EXIT = 75

_preemption_flag = threading.Event()


def _request_preemption(signum: int, frame: object) -> None:
    # Only raise the flag: saving from inside a signal handler would race the running step.
    _preemption_flag.set()


def install_preemption_handler(signals: tuple[int, ...] = (signal.SIGTERM,)) -> dict[int, Any]:
    """Makes `signals` raise the preemption flag instead of killing the process.

    Clears any earlier request. Returns the previous handler of each signal so that a caller (a
    test) can put them back with `signal.signal`. Must be called from the main thread, preferably
    after `jax.distributed.initialize()`: that installs jax's own SIGTERM notifier, which replaces
    this handler; `should_stop_for_preemption` then still stops, through jax's notifier.
    """
    _preemption_flag.clear()
    return {signum: signal.signal(signum, _request_preemption) for signum in signals}


def preemption_requested() -> bool:
    """Whether this process received a preemption signal (no agreement with other processes)."""
    return _preemption_flag.is_set()


def should_stop_for_preemption(step: int, *, check_every_steps: int = 1) -> bool:
    """Whether all processes should save and stop now; every process must call it at every step.

    With several processes the flags are combined (any process preempted stops all) by a collective
    on the devices, which waits for the step in flight; `check_every_steps` > 1 keeps that off most
    steps. The answer is identical on every process, so they all save the same step.
    """
    if jax.process_count() == 1:
        return preemption_requested()
    # Covers a SIGTERM caught by jax's notifier rather than ours (see install_preemption_handler);
    # its agreement protocol runs on the coordination service and needs a call at every step.
    stop_agreed_by_jax = _reached_jax_preemption_sync_point(step)
    if step % check_every_steps:
        return stop_agreed_by_jax
    flags = multihost_utils.process_allgather(np.asarray(preemption_requested(), dtype=np.int32))
    return stop_agreed_by_jax or bool(np.any(flags))


def _reached_jax_preemption_sync_point(step: int) -> bool:
    try:
        return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:
        # Raised only when jax's preemption service is disabled (jax_enable_preemption_service).
        return False
