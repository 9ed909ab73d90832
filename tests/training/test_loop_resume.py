"""Interrupted runs: SIGKILL then restart is bitwise the uninterrupted run (the tiny GPT-2 of hh.py and the
tiny GPT-J of tldr.py); SIGTERM saves and exits cleanly; 2 processes x 4 devices (jax.distributed on
127.0.0.1) train like 1 process x 8 devices, and resume."""

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from dpo_jax.checkpoint import PREEMPTED_EXIT
from tests.train_helpers import REPO, exported_params, main_command, process_env, read_metrics, run_main

pytestmark = pytest.mark.slow

STEPS = 24
GPT2 = "configs/hh.py:tiny"
# The tiny GPT-J of tldr.py (the paper's TL;DR architecture) adds its model to the kill-and-resume
# case at a few seconds: half the steps, and no samples at the end (test_loop.py's SFT-then-DPO
# test samples it). name -> (config, steps, overrides after OVERRIDES).
SIGKILL_CASES = {
    "gpt2": (GPT2, STEPS, ()),
    "gptj": (
        "configs/tldr.py:tiny,gptj",
        STEPS // 2,
        (f"--config.num_train_steps={STEPS // 2}", "--config.eval_samples=0"),
    ),
}
OVERRIDES = (
    f"--config.num_train_steps={STEPS}",
    "--config.checkpoint_every_steps=3",
    "--config.eval_every_examples=1000000",
    "--config.tensorboard=False",
)


def _checkpoint_steps(workdir) -> list[int]:
    directory = Path(workdir, "checkpoints")
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _start(workdir, *overrides, env=None, config=GPT2):
    return subprocess.Popen(
        main_command(workdir, config, *OVERRIDES, *overrides),
        cwd=REPO,
        env=env or process_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _interrupt_after_first_checkpoint(proc, workdir, sig) -> str:
    deadline = time.time() + 240
    while not _checkpoint_steps(workdir):
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"run ended or stalled before its first checkpoint:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc.communicate(timeout=240)[0]


def _metrics_lines(workdir) -> list[dict]:
    """metrics.jsonl line by line, without the timings (perf/*), which no two runs share."""
    lines = [json.loads(line) for line in Path(workdir, "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.startswith("perf/")} for line in lines]


def _assert_same_run(workdir, reference_workdir, *, exact: bool, steps: int = STEPS):
    if exact:  # the same lines, the same keys: a resumed run logs the data counters once, as one run does
        assert _metrics_lines(workdir) == _metrics_lines(reference_workdir)
    got, want = read_metrics(workdir), read_metrics(reference_workdir)
    assert sorted(got) == sorted(want) == list(range(1, steps + 1))
    for step in want:
        for key in ("loss", "grad_norm", "rewards/margins", "logps/chosen"):
            if exact:
                assert got[step][key] == want[step][key], (step, key)
            else:
                assert got[step][key] == pytest.approx(want[step][key], rel=1e-5, abs=1e-6), (step, key)
    want_params = exported_params(reference_workdir)
    for name, value in exported_params(workdir).items():
        if exact:
            np.testing.assert_array_equal(value, want_params[name], err_msg=name)
        else:
            np.testing.assert_allclose(value, want_params[name], atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted_runs(tmp_path_factory):
    """(config, overrides) -> the workdir of its uninterrupted run, made once per module."""
    workdirs = {}

    def run(config: str, *overrides: str):
        if (config, overrides) not in workdirs:
            workdir = tmp_path_factory.mktemp("uninterrupted")
            result = run_main(workdir, *OVERRIDES, *overrides, config=config)
            assert result.returncode == 0, result.stderr[-3000:]
            workdirs[config, overrides] = workdir
        return workdirs[config, overrides]

    return run


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_runs):
    return uninterrupted_runs(GPT2)


@pytest.mark.parametrize("case", SIGKILL_CASES)
def test_sigkill_then_restart_is_bitwise_identical(tmp_path, uninterrupted_runs, case):
    config, steps, overrides = SIGKILL_CASES[case]
    reference = uninterrupted_runs(config, *overrides)
    proc = _start(tmp_path, *overrides, config=config)
    output = _interrupt_after_first_checkpoint(proc, tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, output[-2000:]
    assert not (tmp_path / "FINISHED").exists()
    killed_at = _checkpoint_steps(tmp_path)[-1]
    assert killed_at < steps
    result = run_main(tmp_path, *OVERRIDES, *overrides, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from step {killed_at}" in result.stderr
    _assert_same_run(tmp_path, reference, exact=True, steps=steps)


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, uninterrupted):
    proc = _start(tmp_path)
    output = _interrupt_after_first_checkpoint(proc, tmp_path, signal.SIGTERM)
    assert proc.returncode == PREEMPTED_EXIT == 75, output[-3000:]  # schedulers requeue on it
    stopped_at = _checkpoint_steps(tmp_path)[-1]
    assert f"preempted: saved step {stopped_at} of {STEPS}; exit status 75" in output
    assert "Traceback" not in output
    assert not (tmp_path / "FINISHED").exists()
    result = run_main(tmp_path, *OVERRIDES)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_run(tmp_path, uninterrupted, exact=True)


def _two_process_run(workdir, *overrides):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = [
        _start(
            workdir,
            *overrides,
            env=process_env(
                devices=4,
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(process_id),
            ),
        )
        for process_id in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
    return outputs


def test_two_processes_match_one_process_and_resume(tmp_path, uninterrupted):
    # First half on 2 processes x 4 devices, stopped at a checkpoint; then resumed to the end.
    _two_process_run(tmp_path, f"--config.num_train_steps={STEPS // 2}", "--config.export_hf=False")
    assert _checkpoint_steps(tmp_path)[-1] == STEPS // 2
    outputs = _two_process_run(tmp_path)
    assert all(f"resumed from step {STEPS // 2}" in out for out in outputs)
    _assert_same_run(tmp_path, uninterrupted, exact=False)
