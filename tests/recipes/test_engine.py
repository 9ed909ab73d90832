"""The recipe engine: finished stages reused, changed ones re-run with the reason, failed ones resumed in place."""

import dataclasses
import json

import ml_collections
import pytest

from dpo_jax import UserError
from dpo_jax.recipes.base import apply_overrides
from dpo_jax.recipes.engine import LOG_FILE, STAGE_FILE, STARTED_FILE, Runner, Stage, StageFailed, check_dag


def _echo(name, value, *, after=(), inputs=(), fail=0):
    args = [
        "tests.recipes.echo_stage",
        f"--out={{root}}/{name}/out.txt",
        f"--value={value}",
        f"--fail={fail}",
    ]
    if inputs:
        args.append(f"--input={inputs[0]}")
    return Stage(name, tuple(args), after=tuple(after), inputs=tuple(inputs), kind="report")


def _run(root, stages):
    lines = []
    runner = Runner(str(root), log=lines.append)
    return [runner.run(s).status for s in stages], "\n".join(lines)


def test_reuse_rerun_with_reasons_and_resume(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("x")
    root = tmp_path / "recipe"
    plan = [_echo("a", 1, inputs=(str(data),)), _echo("b", 2, after=("a",))]
    assert _run(root, plan)[0] == ["ran", "ran"]
    assert (root / "a" / "out.txt").read_text() == "1x" and (root / "b" / STAGE_FILE).exists()
    assert _run(root, plan)[0] == ["reused", "reused"]

    statuses, log = _run(root, [_echo("a", 3, inputs=(str(data),)), _echo("b", 2, after=("a",))])
    assert statuses == ["ran", "ran"]
    assert "--value: 1 -> 3" in log and "upstream stage a changed" in log
    superseded = list((root / ".superseded").iterdir())
    assert sorted(p.name.split(".")[0] for p in superseded) == ["a", "b"]  # kept, not deleted
    assert any((p / "out.txt").exists() and (p / "out.txt").read_text() == "1x" for p in superseded)

    data.write_text("y")
    statuses, log = _run(root, [_echo("a", 3, inputs=(str(data),)), _echo("b", 2, after=("a",))])
    assert statuses == ["ran", "ran"] and f"input {data} changed" in log
    assert (root / "a" / "out.txt").read_text() == "3y"


def test_untracked_arguments_reach_the_command_outside_the_fingerprint(tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("x")
    second.write_text("y")
    root = tmp_path / "recipe"
    stage = dataclasses.replace(_echo("a", 1), untracked=(f"--input={first}",))
    assert _run(root, [stage])[0] == ["ran"] and (root / "a" / "out.txt").read_text() == "1x"
    assert _run(root, [dataclasses.replace(stage, untracked=(f"--input={second}",))])[0] == ["reused"]
    statuses, log = _run(root, [dataclasses.replace(_echo("a", 2), untracked=(f"--input={second}",))])
    assert statuses == ["ran"] and "--value: 1 -> 2" in log and "--input:" not in log
    assert (root / "a" / "out.txt").read_text() == "2y"


def test_a_failed_stage_reports_its_log_and_reruns_in_place(tmp_path):
    root = tmp_path / "recipe"
    with pytest.raises(StageFailed, match="exit status 3") as failure:
        _run(root, [_echo("a", 1, fail=3)])
    assert "stage went wrong here" in str(failure.value) and failure.value.exit_status == 3
    assert (root / "a" / STARTED_FILE).exists() and not (root / "a" / STAGE_FILE).exists()
    # The same stage again (a killed or failed run): resumed in its own directory, not moved aside.
    root_a = root / "a"
    (root_a / "partial").write_text("kept")
    lines = []
    with pytest.raises(StageFailed):
        Runner(str(root), log=lines.append).run(_echo("a", 1, fail=3))
    assert (root_a / "partial").exists() and "stage a: resuming an interrupted run" in lines
    statuses, log = _run(root, [_echo("a", 1)])  # its arguments changed: a fresh directory
    assert statuses == ["ran"] and "--fail: 3 -> 0" in log and not (root_a / "partial").exists()
    assert json.loads((root_a / STAGE_FILE).read_text())["identity"]["args"][-1] == "--fail=0"


def test_resuming_prints_so(tmp_path):
    root = tmp_path / "recipe"
    (root / "a").mkdir(parents=True)
    stage = _echo("a", 1)
    runner = Runner(str(root), log=lambda line: None)
    identity = runner.identity(stage)
    from dpo_jax.recipes.engine import fingerprint

    (root / "a" / STARTED_FILE).write_text(
        json.dumps({"fingerprint": fingerprint(identity), "identity": identity})
    )
    statuses, log = _run(root, [stage])
    assert statuses == ["ran"] and "resuming an interrupted run" in log


def test_the_dag_is_checked():
    with pytest.raises(ValueError, match="do not come before"):
        check_dag([_echo("b", 1, after=("a",)), _echo("a", 1)])
    with pytest.raises(ValueError, match="two stages named a"):
        check_dag([_echo("a", 1), _echo("a", 2)])


def test_recipe_overrides_are_typed():
    config = ml_collections.ConfigDict(dict(betas=(0.1,), steps=4, name="x", flag=False, lr=1.0))
    apply_overrides(config, ["betas=0.1,0.5", "steps=8", "name=y", "flag=true", "lr=2"])
    assert config.betas == (0.1, 0.5) and config.steps == 8 and config.name == "y" and config.flag
    assert config.lr == 2.0 and isinstance(config.lr, float)
    with pytest.raises(UserError, match="--recipe.bettas: no such field"):
        apply_overrides(config, ["bettas=0.1"])
    with pytest.raises(UserError, match="--recipe.steps=many: not a int"):
        apply_overrides(config, ["steps=many"])
    with pytest.raises(UserError, match="--recipe.betas=a,b: not a tuple"):
        apply_overrides(config, ["betas=a,b"])
    with pytest.raises(UserError, match="expected numbers"):
        apply_overrides(config, ["betas='a','b'"])


def test_a_sigterm_to_the_recipe_reaches_the_running_stage_which_exits_75(tmp_path):
    import os
    import signal
    import threading
    import time

    root, ready = tmp_path / "recipe", tmp_path / "ready"
    stage = Stage("a", ("tests.recipes.echo_stage", "--out={root}/a/out.txt", f"--wait_for_sigterm={ready}"))

    def preempt_when_ready():
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # as a TPU VM's preemption notice reaches the recipe

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=preempt_when_ready, daemon=True).start()
    with pytest.raises(StageFailed, match="preempted after saving") as stopped:
        _run(root, [stage])
    assert stopped.value.exit_status == 75 and "saved, preempted" in str(stopped.value)
    assert (root / "a" / STARTED_FILE).exists()  # the next run resumes it in place
    assert signal.getsignal(signal.SIGTERM) is before  # the recipe's own handling is restored


def test_one_recipe_at_a_time_in_a_directory(tmp_path):
    import socket
    import subprocess
    import time

    from dpo_jax.recipes import get_recipe
    from dpo_jax.recipes.run import RECIPE_FILE, run_recipe
    from dpo_jax.run.workdir import LOCK_FILENAME, WorkdirLockedError

    root = tmp_path / "recipe"
    root.mkdir()
    # Another live process holds DIR's lock, as a recipe already running there would.
    other = subprocess.Popen(["sleep", "60"])
    try:
        owner = {"host": socket.gethostname(), "pid": other.pid, "started": time.time()}
        (root / LOCK_FILENAME).write_text(json.dumps(owner))
        with pytest.raises(WorkdirLockedError, match="in use by another run"):
            run_recipe(get_recipe("imdb"), "tiny", str(root), [], log=lambda line: None)
    finally:
        other.kill()
    assert not any((root / name).exists() for name in ("sft", RECIPE_FILE))


def test_stages_that_use_the_devices_run_under_the_launcher(tmp_path):
    # Under Slurm the launcher is srun on every node: a sampling or scoring stage run outside it would
    # see the allocation's environment and wait for jax.distributed peers that never come.
    log = lambda stage: (tmp_path / stage / LOG_FILE).read_text()  # noqa: E731
    runner = Runner(str(tmp_path), log=lambda line: None, launcher=("env", "LAUNCHED=1"))
    for kind in ("train", "sample", "score", "model"):
        runner.run(dataclasses.replace(_echo(kind, 1), kind=kind))
    launched = {kind for kind in ("train", "sample", "score", "model") if "env LAUNCHED=1" in log(kind)}
    assert launched == {"train", "sample", "score"}


def _start_follower(root, session, marker):
    import subprocess
    import sys

    from tests.train_helpers import REPO, process_env

    return subprocess.Popen(
        [sys.executable, "-m", "tests.recipes.follower", str(root), session, str(marker)],
        cwd=REPO, env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _lead(root, session, marker):
    from tests.recipes.follower import two_host_stages

    runner = Runner(str(root), log=lambda line: None, session=session)
    return [runner.run(stage).status for stage in two_host_stages(str(marker))]


def test_a_follower_runs_the_device_stages_beside_the_lead_and_writes_nothing_else(tmp_path):
    root, marker = tmp_path / "recipe", tmp_path / "transient"
    follower = _start_follower(root, "s1", marker)  # first: it waits for the lead to prepare each stage
    assert _lead(root, "s1", marker) == ["ran", "ran", "ran"]
    out, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0 and out.split() == ["ran", "reused", "ran"], out
    # Its own logs for the device stages only; the lead's books and logs untouched by it.
    assert sorted(p.relative_to(root).as_posix() for p in root.glob("*/stage.worker1.log")) == [
        "a/stage.worker1.log", "b/stage.worker1.log",
    ]  # fmt: skip
    assert all((root / name / LOG_FILE).exists() and (root / name / STAGE_FILE).exists() for name in "amb")
    assert (root / "b" / "out.txt").read_text() == "32"  # b read m's output: the follower waited for m


def test_a_failure_on_the_lead_stops_its_followers_of_that_launch_only(tmp_path):
    root, marker = tmp_path / "recipe", tmp_path / "transient"
    marker.write_text("")
    follower = _start_follower(root, "s1", marker)
    with pytest.raises(StageFailed, match="exit status 3"):
        _lead(root, "s1", marker)
    out, _ = follower.communicate(timeout=120)
    assert follower.returncode == 3 and "stage m failed on the lead worker (exit status 3)" in out, out
    # The next launch: the failure of s1 is not taken for one of s2; m runs again on the lead.
    marker.unlink()
    follower = _start_follower(root, "s2", marker)
    assert _lead(root, "s2", marker) == ["reused", "ran", "ran"]
    out, _ = follower.communicate(timeout=120)
    assert follower.returncode == 0 and out.split() == ["reused", "reused", "ran"], out


def test_a_worker_that_is_not_a_number_is_a_user_error():
    from dpo_jax.recipes import get_recipe

    config = get_recipe("imdb").config("tiny")
    with pytest.raises(UserError, match="worker=unknown"):
        apply_overrides(config, ["worker=unknown"])


def test_a_finished_stage_with_missing_or_altered_outputs_runs_again_and_so_do_its_readers(tmp_path):
    import os

    root = tmp_path / "recipe"
    plan = [_echo("a", 1), _echo("b", 2, after=("a",))]
    assert _run(root, plan)[0] == ["ran", "ran"]
    (root / "a" / "checkpoints").mkdir()  # resume state is no output: deleting it changes nothing
    assert _run(root, plan)[0] == ["reused", "reused"]
    (root / "a" / "checkpoints").rmdir()
    assert _run(root, plan)[0] == ["reused", "reused"]

    (root / "a" / "out.txt").unlink()  # the export a later stage reads, deleted
    statuses, log = _run(root, plan)
    assert statuses == ["ran", "ran"], log
    assert "out.txt is missing" in log and "upstream stage a ran again since" in log
    assert "no recipe wrote" not in log and (root / "a" / "out.txt").read_text() == "1"
    assert (root / "a" / LOG_FILE).read_text().count("=== ") == 2  # run again in its own directory
    assert _run(root, plan)[0] == ["reused", "reused"]

    out = root / "b" / "out.txt"
    out.write_text("9")  # same size, new contents (and a new modification time)
    os.utime(out, ns=(1, 1))
    statuses, log = _run(root, plan)
    assert statuses == ["reused", "ran"] and "out.txt was altered" in log and out.read_text() == "2"


def _preempt_when(path):
    import os
    import signal
    import threading
    import time

    def preempt():
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()


def test_a_sigterm_while_a_stage_starts_up_is_a_preemption_not_a_failure(tmp_path):
    from dpo_jax.recipes.engine import FAILED_FILE

    root, ready = tmp_path / "recipe", tmp_path / "ready"
    args = ("tests.recipes.echo_stage", "--out={root}/a/out.txt")
    _preempt_when(ready)  # the stage has no SIGTERM handler yet: the notice kills it (-15)
    with pytest.raises(StageFailed, match="stopped by the preemption notice") as stopped:
        _run(root, [Stage("a", (*args, f"--wait_unhandled={ready}"))])
    assert stopped.value.exit_status == 75
    assert (root / "a" / STARTED_FILE).exists() and not (root / "a" / FAILED_FILE).exists()


def test_a_sigterm_as_a_finished_stage_exits_or_between_stages_stops_the_recipe_with_75(tmp_path):
    import os
    import signal

    from dpo_jax.recipes.engine import FAILED_FILE

    root = tmp_path / "recipe"
    a = Stage("a", ("tests.recipes.echo_stage", "--out={root}/a/out.txt", "--finish_then_sigterm_recipe"))
    with pytest.raises(StageFailed) as stopped:
        _run(root, [a, _echo("b", 2, after=("a",))])
    assert stopped.value.exit_status == 75 and "preempt" in str(stopped.value)
    assert not (root / "a" / FAILED_FILE).exists() and not (root / "b").exists()
    statuses, log = _run(root, [_echo("b", 2)])  # the next run goes on
    assert statuses == ["ran"]

    lines = []
    runner = Runner(str(root), log=lines.append)
    with runner.handling_preemption():
        assert runner.run(_echo("b", 2)).status == "reused"
        os.kill(os.getpid(), signal.SIGTERM)  # between two stages
        with pytest.raises(StageFailed, match="preempted .* before stage c") as stopped:
            runner.run(_echo("c", 3))
    assert stopped.value.exit_status == 75 and not (root / "c").exists()


def test_a_full_disk_for_the_recipes_own_files_is_one_line_and_leaves_no_temporary_file(
    tmp_path, monkeypatch
):
    import errno
    from pathlib import Path

    root = tmp_path / "recipe"
    write_text = Path.write_text

    def full_disk(path, text, *args, **kwargs):
        if path.name.startswith(STARTED_FILE):
            write_text(path, "", *args, **kwargs)  # the file is created, then nothing fits
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(StageFailed) as failed:
        _run(root, [_echo("a", 1)])
    assert str(failed.value) == f"cannot write {root / 'a' / STARTED_FILE}: No space left on device"
    assert failed.value.exit_status == 1 and list((root / "a").iterdir()) == []
    monkeypatch.undo()
    statuses, log = _run(root, [_echo("a", 1)])
    assert statuses == ["ran"] and "no recipe wrote" not in log


def test_a_failed_stage_says_why_in_its_first_line(tmp_path):
    root = tmp_path / "recipe"
    stage = Stage("a", (*_echo("a", 1, fail=1).args, "--error_line=disk full while saving step 3"))
    with pytest.raises(StageFailed) as failed:
        _run(root, [stage])
    first = str(failed.value).splitlines()[0]
    assert first.startswith("stage a failed (exit status 1): disk full while saving step 3; ")


def test_a_moved_recipe_directory_names_its_own_stages(tmp_path):
    import shutil

    root, moved = tmp_path / "recipe", tmp_path / "elsewhere"
    a = Stage("a", ("tests.recipes.echo_stage", "--out={root}/a/out.txt", "--run_config={root}/a/export"))
    b = _echo("b", 2, after=("a",))
    assert _run(root, [a, b])[0] == ["ran", "ran"]
    shutil.copytree(root, moved)  # copied: new modification times, same contents
    statuses, log = _run(moved, [a, b])
    assert statuses == ["reused", "reused"] and f"DIR moved from {root}" in log
    assert json.loads((moved / "a" / "run_config.json").read_text()) == {
        "model": {"name_or_path": str(moved / "a" / "export")}
    }
    statuses, log = _run(moved, [a, b])
    assert statuses == ["reused", "reused"] and "moved" not in log  # the books say where it is now


def test_a_damaged_stage_record_is_named_as_such(tmp_path):
    root = tmp_path / "recipe"
    _run(root, [_echo("a", 1)])
    record = root / "a" / STAGE_FILE
    record.write_text(record.read_text()[:20])  # cut short
    statuses, log = _run(root, [_echo("a", 1)])
    assert statuses == ["ran"] and f"its {STAGE_FILE} is damaged" in log and "no recipe wrote" not in log
