"""A full disk during an (async) save: one CheckpointDiskFullError naming the mount point, the step and the
last complete step; Orbax's thread tracebacks go to the details file, not to stderr; nothing is lost."""

import os
import subprocess
import uuid

import pytest

from dpo_jax import checkpoint, sharding
from dpo_jax.checkpoint.disk_full import details_path, is_disk_full
from tests.checkpoint.test_checkpointer import trained_state


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk (needs the right to mount, as root in CI containers)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}): no real full disk")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _fill(mount, leave_bytes: int) -> None:
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(mount / "filler", "wb") as handle:
        handle.write(b"x" * max(0, free - leave_bytes))


def test_a_full_disk_during_an_async_save_is_one_plain_error(tiny_disk, capfd):
    state = trained_state(sharding.make_mesh((8, 1, 1)))
    directory = tiny_disk / "checkpoints"
    checkpointer = checkpoint.Checkpointer(directory, save_every_steps=1, keep=3, async_save=True)
    checkpointer.save(1, state, data_position={"step": 1})
    checkpointer.wait_until_finished()
    _fill(tiny_disk, leave_bytes=8192)
    with pytest.raises(checkpoint.CheckpointDiskFullError) as raised:
        checkpointer.save(2, state, data_position={"step": 2})
        checkpointer.save(3, state, data_position={"step": 3})
        checkpointer.wait_until_finished()
    checkpointer.close()  # after the error: says nothing more
    assert str(raised.value).startswith(
        f"no space left on {tiny_disk} while saving step 2; the last complete checkpoint is step 1 (details: "
    )
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr and "No space left" not in stderr, stderr[-2000:]
    assert "No space left on device" in open(details_path()).read()
    os.remove(tiny_disk / "filler")
    with checkpoint.Checkpointer(directory, save_every_steps=1, keep=3) as reader:
        assert reader.all_steps() == [1]  # step 1 intact, step 2 unfinished and cleaned


def test_tensorstores_enospc_text_and_oserror_count_as_a_full_disk():
    marker = str(uuid.uuid4())
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = ValueError(
        f"RESOURCE_EXHAUSTED: {marker}: No space left on device [os_error_code='28']"
    )
    assert is_disk_full(wrapped)
    assert is_disk_full(OSError(28, "No space left on device"))
    assert not is_disk_full(ValueError("RESOURCE_EXHAUSTED: out of memory"))
