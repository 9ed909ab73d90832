"""The loop under faults: a resume rewrites nothing twice and refuses changed settings; non-finite runs
stop without FINISHED; an error surfaces alone (one line, no Orbax noise, no tmp checkpoint)."""

import json
import shutil
from pathlib import Path

import pytest

from dpo_jax import UserError
from dpo_jax.run import FINISHED_MARKER, NonFiniteLossError
from dpo_jax.training.loop import train_and_evaluate
from tests.train_helpers import run_main, tiny_config

pytestmark = pytest.mark.slow

FAST = dict(log_every_steps=1, eval_every_examples=10**6, eval_samples=0, do_first_eval=False)


def _rows(workdir):
    return [json.loads(line) for line in Path(workdir, "metrics.jsonl").read_text().splitlines()]


def _leftovers(workdir):
    checkpoints = Path(workdir, "checkpoints")
    return [p.name for p in checkpoints.iterdir() if "tmp" in p.name] + [
        p.name for p in Path(workdir).iterdir() if p.name == "RUN_LOCK"
    ]


def test_resume_logs_each_step_once_and_refuses_changed_settings(tmp_path):
    config = tiny_config("hh", "tiny", num_train_steps=4, checkpoint_every_steps=2, **FAST)
    train_and_evaluate(config, str(tmp_path))
    # As if killed after logging step 4 but before its checkpoint: the restart redoes steps 3 and 4.
    shutil.move(tmp_path / "checkpoints" / "4", tmp_path / "step4")
    (tmp_path / FINISHED_MARKER).unlink()
    train_and_evaluate(config, str(tmp_path))
    steps = [row["step"] for row in _rows(tmp_path) if "loss" in row]
    assert steps == [1, 2, 3, 4]

    changed = tiny_config("hh", "tiny", num_train_steps=6, checkpoint_every_steps=2, beta=0.5, **FAST)
    with pytest.raises(UserError, match=r"step 4\) was trained with other settings.*\n  beta: 0.1 -> 0.5\n"):
        train_and_evaluate(changed, str(tmp_path))
    assert json.loads((tmp_path / "run_config.json").read_text())["beta"] == 0.1  # not overwritten
    changed.allow_config_change = True
    train_and_evaluate(changed, str(tmp_path))
    assert [row["step"] for row in _rows(tmp_path) if "loss" in row] == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "run_config.json").read_text())["beta"] == 0.5
    assert _leftovers(tmp_path) == []


def test_a_run_whose_every_step_is_skipped_stops_and_is_not_finished(tmp_path):
    # beta = inf makes every DPO logit inf * 0 = NaN: no step can update the parameters.
    nan_run = dict(beta=float("inf"), nonfinite_policy="skip", checkpoint_every_steps=1, **FAST)
    config = tiny_config("hh", "tiny", num_train_steps=6, max_consecutive_skipped_steps=3, **nan_run)
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*3 non-finite steps in a row"):
        train_and_evaluate(config, str(tmp_path / "limit"))
    rows = [row for row in _rows(tmp_path / "limit") if "loss" in row]
    assert rows[0]["loss"] is None and rows[0]["nonfinite"] == 1.0  # JSON null, not "nan"
    short = tiny_config("hh", "tiny", num_train_steps=2, max_consecutive_skipped_steps=0, **nan_run)
    with pytest.raises(NonFiniteLossError, match=r"no step of this run \(1..2\) updated the parameters"):
        train_and_evaluate(short, str(tmp_path / "short"))
    for name in ("limit", "short"):
        assert not (tmp_path / name / FINISHED_MARKER).exists()
        assert not (tmp_path / name / "export").exists()
        assert _leftovers(tmp_path / name) == []


def test_a_stopping_error_is_one_line_without_orbax_noise(tmp_path):
    result = run_main(
        tmp_path, "--config.beta=inf", "--config.num_train_steps=3", "--config.checkpoint_every_steps=1",
        *(f"--config.{k}={v}" for k, v in FAST.items()),
    )
    assert result.returncode == 1
    assert "non-finite loss or gradient at step 1" in result.stderr
    for noise in ("Traceback", "Event loop is closed"):
        assert noise not in result.stderr, result.stderr[-3000:]
    assert _leftovers(tmp_path) == []
