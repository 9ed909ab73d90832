"""A full disk during a checkpoint save: one plain line for the user, Orbax's thread tracebacks to a file.

When the disk fills mid-save, every one of Orbax's writer threads logs its failure with a traceback
(hundreds of lines of TensorStore specs) before the save's error reaches the trainer. Nothing is lost:
the unfinished step stays a temporary directory and the previous step is intact. `divert_disk_full_logs`
sends those records to a details file (in the system temp directory: the full disk may hold the
workdir) and `CheckpointDiskFullError` says what happened and what remains.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import traceback

# How TensorStore reports ENOSPC: a ValueError whose text carries the OS error, not an OSError.
_MARKERS = ("No space left on device", "os_error_code='28'")


class CheckpointDiskFullError(RuntimeError):
    """A save failed because its file system is full; earlier checkpoints are complete."""


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error` or anything in its cause/context chain is a full disk."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if any(marker in str(error) for marker in _MARKERS):
            return True
        error = error.__cause__ or error.__context__
    return False


def mount_point(path: str) -> str:
    """The mount point holding `path` (the "device" a user frees space on)."""
    path = os.path.abspath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def details_path() -> str:
    return os.path.join(tempfile.gettempdir(), f"dpo_jax-checkpoint-disk-full-{os.getpid()}.log")


def write_details(text: str) -> None:
    try:
        with open(details_path(), "a", encoding="utf-8") as handle:
            handle.write(text.rstrip("\n") + "\n")
    except OSError:  # the temp directory may be on the full disk too: the one-line error still says it
        pass


class _DivertDiskFull(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        if not any(marker in text for marker in _MARKERS):
            return True
        write_details(f"{record.name} {record.levelname}: {text}")
        return False


def divert_disk_full_logs() -> None:
    """Orbax's (absl-logged) disk-full records go to `details_path()` instead of stderr (once per process)."""
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _DivertDiskFull) for f in absl_logger.filters):
        absl_logger.addFilter(_DivertDiskFull())
