"""`stage=ppo` from the command line inside the run scaffold: one run per workdir (a second is refused
with the lock message), SIGTERM saves and exits 75, the resume ends where an uninterrupted run ends
with each step logged once, and a missing reward model is one `error:` line with exit status 2."""

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from dpo_jax.checkpoint import PREEMPTED_EXIT
from dpo_jax.models.loading import load_scalar_head_model
from dpo_jax.models.reward import to_hf_reward_model
from tests.train_helpers import REPO, exported_params, main_command, process_env, run_main, tiny_config

pytestmark = pytest.mark.slow

STEPS = 8
PPO = (
    "--config.stage=ppo",
    f"--config.num_train_steps={STEPS}",
    "--config.checkpoint_every_steps=2",
    "--config.log_every_steps=1",
    "--config.ppo.max_new_tokens=4",
    "--config.ppo.num_minibatches=1",
    "--config.ppo.num_epochs=1",
    "--config.tensorboard=False",
    # The README's PPO command keeps the config's micro-batching: PPO says it updates per minibatch.
    "--config.grad_accum_steps=4",
)


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("rm") / "export"
    config = tiny_config("hh", "tiny")
    model, params = load_scalar_head_model(config.model, param_dtype="float32", seed=1)
    to_hf_reward_model(model, params, str(path), pad_token_id=None)
    return str(path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, reward_model):
    workdir = tmp_path_factory.mktemp("ppo_uninterrupted")
    result = run_main(workdir, *PPO, f"--config.ppo.reward_model={reward_model}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grad_accum_steps=4 is not used" in result.stderr
    return workdir


def _steps_logged(workdir) -> list[int]:
    lines = Path(workdir, "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "rollout/score" in line]


def _a_step_is_logged(workdir) -> bool:
    path = Path(workdir, "metrics.jsonl")  # read while written: only whole lines count
    return path.exists() and any("rollout/score" in line for line in path.read_text().split("\n")[:-1])


def _wait_for(condition, proc, what: str) -> None:
    deadline = time.time() + 900
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"the run ended or stalled before {what}:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.02)


def test_one_run_per_workdir_sigterm_exits_75_and_resumes_to_the_same_export(
    tmp_path, reward_model, uninterrupted
):
    overrides = (*PPO, f"--config.ppo.reward_model={reward_model}")
    first = subprocess.Popen(
        main_command(tmp_path, "configs/hh.py:tiny", *overrides),
        cwd=REPO, env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    _wait_for(lambda: (tmp_path / "RUN_LOCK").exists(), first, "taking the lock")
    first.send_signal(signal.SIGSTOP)  # holds the lock, alive, while the second run starts
    try:
        second = run_main(tmp_path, *overrides, timeout=900)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr[-3000:]
    assert "is in use by another run" in second.stderr and "Traceback" not in second.stderr
    assert [line for line in second.stderr.splitlines() if line.startswith("error:")] == [
        second.stderr.strip().splitlines()[-1]
    ]

    # SIGTERM mid-run: once a step is logged, the handler (installed right after the checkpointer,
    # before the first step) is up. Not a fixed sleep: with the programs in the test run's compilation
    # cache, a fast machine may finish all STEPS within a second.
    checkpoints = tmp_path / "checkpoints"
    _wait_for(lambda: _a_step_is_logged(tmp_path), first, "its first step")
    assert checkpoints.exists()
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=900)[0]
    assert first.returncode == PREEMPTED_EXIT == 75, output[-3000:]
    assert "preempted: saved step" in output and "Traceback" not in output
    assert not (tmp_path / "FINISHED").exists()
    stopped_at = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert stopped_at < STEPS

    resumed = run_main(tmp_path, *overrides, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stopped_at}" in resumed.stderr
    assert _steps_logged(tmp_path) == list(range(1, STEPS + 1)) == _steps_logged(uninterrupted)
    want = exported_params(uninterrupted)
    for name, value in exported_params(tmp_path).items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)


@pytest.mark.parametrize("reward_model", ["", "/nonexistent/reward_model"], ids=["empty", "missing"])
def test_a_missing_reward_model_is_one_error_line(tmp_path, reward_model):
    result = run_main(tmp_path, *PPO, f"--config.ppo.reward_model={reward_model}", timeout=900)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "config.ppo.reward_model" in last
