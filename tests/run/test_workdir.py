"""The workdir lock (one run at a time, stale locks taken over) and the config check on resume."""

import json
import logging
import os
import subprocess
import sys
import time

import pytest
from etils import epath

from dpo_jax import UserError
from dpo_jax.run.workdir import (
    LOCK_FILENAME,
    WorkdirLock,
    WorkdirLockedError,
    config_changes,
    optimisation_config,
)
from dpo_jax.training.loop import train_and_evaluate
from tests.train_helpers import tiny_config


@pytest.fixture
def other_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _write_lock(workdir, *, host, pid, age_s=0.0):
    path = workdir / LOCK_FILENAME
    path.write_text(json.dumps({"host": host, "pid": pid, "started": 0.0}))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_a_live_run_on_this_host_keeps_the_workdir(tmp_path, other_process):
    import socket

    _write_lock(tmp_path, host=socket.gethostname(), pid=other_process.pid)
    with pytest.raises(WorkdirLockedError, match=rf"in use by another run \(pid {other_process.pid} on"):
        WorkdirLock(epath.Path(tmp_path)).acquire()
    # The trainer refuses before reading any data or building any model.
    with pytest.raises(UserError, match="in use by another run"):
        train_and_evaluate(tiny_config("hh", "tiny", num_train_steps=1), str(tmp_path))


def test_stale_locks_are_taken_over_and_a_released_lock_is_gone(tmp_path, caplog):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = _write_lock(tmp_path, host=socket.gethostname(), pid=int(dead.stdout))
    with caplog.at_level(logging.WARNING, logger="dpo_jax"):
        with WorkdirLock(epath.Path(tmp_path)):
            assert json.loads(path.read_text())["pid"] == os.getpid()
            with WorkdirLock(epath.Path(tmp_path)):  # re-entrant within a process
                pass
            assert path.exists()
    assert "taking over the stale lock" in caplog.text
    assert not path.exists()


def test_another_host_is_judged_by_its_heartbeat(tmp_path):
    _write_lock(tmp_path, host="elsewhere", pid=1, age_s=10)
    with pytest.raises(WorkdirLockedError, match=r"pid 1 on elsewhere, heartbeat 1\d s ago"):
        WorkdirLock(epath.Path(tmp_path), stale_after_s=60).acquire()
    _write_lock(tmp_path, host="elsewhere", pid=1, age_s=120)
    lock = WorkdirLock(epath.Path(tmp_path), stale_after_s=60, heartbeat_s=0.05)
    lock.acquire()
    stamp = time.time() - 1000
    os.utime(lock.path, (stamp, stamp))
    time.sleep(0.3)
    assert time.time() - os.stat(lock.path).st_mtime < 5  # the heartbeat refreshes it
    lock.release()


def test_only_optimisation_fields_count_as_changes():
    saved = optimisation_config(tiny_config("hh", "tiny"))
    harmless = tiny_config("hh", "tiny", log_every_steps=7, eval_every_examples=5, mesh_shape=(2, 4, 1))
    assert config_changes(saved, optimisation_config(harmless)) == []
    longer = tiny_config("hh", "tiny", num_train_steps=40)  # a constant schedule may be extended ...
    assert config_changes(saved, optimisation_config(longer)) == []
    decaying = optimisation_config(tiny_config("hh", "tiny", lr_schedule="cosine"))
    longer_decay = optimisation_config(tiny_config("hh", "tiny", lr_schedule="cosine", num_train_steps=40))
    assert config_changes(decaying, longer_decay) == ["num_train_steps: 4 -> 40"]  # ... a decaying one not
    changed = tiny_config("hh", "tiny", beta=0.5, learning_rate=1e-3, **{"data.max_length": 48})
    assert config_changes(saved, optimisation_config(changed)) == [
        "beta: 0.1 -> 0.5",
        "data.max_length: 64 -> 48",
        f"learning_rate: {json.dumps(saved['learning_rate'])} -> 0.001",
    ]


def test_the_attention_kernel_and_remat_may_change_on_resume():
    saved = optimisation_config(tiny_config("hh", "tiny"))
    kernel = tiny_config("hh", "tiny", **{"model.attention": "xla", "model.remat_policy": "full"})
    assert config_changes(saved, optimisation_config(kernel)) == []
    # A checkpoint written before the table recorded model.attention (the stale name was
    # model.attention_impl): its record is still accepted.
    assert config_changes({**saved, "model.attention": "auto"}, optimisation_config(kernel)) == []


def test_resuming_with_another_attention_kernel_is_accepted(tmp_path):
    """The run scaffold's resume check on a real checkpoint (of a stand-in state: the check reads only
    the config recorded with it)."""
    import jax
    import jax.numpy as jnp

    from dpo_jax.run.scaffold import RunScaffold

    state = {"w": jnp.arange(3.0)}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    with RunScaffold(tiny_config("hh", "tiny"), tmp_path) as run:
        assert run.restore(abstract) is None
        run.save(2, state, {"step": 2}, force=True)
    with RunScaffold(tiny_config("hh", "tiny", **{"model.attention": "xla"}), tmp_path) as run:
        assert run.restore(abstract)[0] == 2  # refused before: model.attention: "auto" -> "xla"
    with RunScaffold(tiny_config("hh", "tiny", beta=0.5), tmp_path) as run:
        with pytest.raises(UserError, match=r"beta: 0.1 -> 0.5"):
            run.restore(abstract)
