"""The one step loop on a stand-in stage (no model, a tiny state): what each loop field means, once.

Every stage (SFT, DPO, the reward model, PPO) hands its step to `run_steps`; these tests pin what the
loop does with the step's metrics, the hooks and the export, so the stage tests need only show that
they run through it (tests/training/test_loop_faults.py, tests/ppo/test_loop.py).
"""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpo_jax import UserError
from dpo_jax.config.defaults import base_config
from dpo_jax.run import (
    FINISHED_MARKER,
    Hook,
    LoopSettings,
    NonFiniteLossError,
    RunScaffold,
    StageSteps,
    run_steps,
)
from dpo_jax.run.loop import merged_row
from dpo_jax.run.state import TrainState


def _config():
    config = base_config()
    config.tensorboard = False
    config.checkpoint_every_steps = 1000  # only the final save
    return config


def _state():
    return TrainState.create(params={"w": jnp.zeros((2,))}, tx=optax.sgd(0.1), rng=0)


class FakeStage:
    """Step s has loss values `losses[s]` (one per update) and skips the updates `skipped[s]` says."""

    def __init__(self, num_steps, losses, skipped=None):
        self.num_steps, self.losses = num_steps, losses
        self.skipped = skipped or [0] * num_steps
        self.exported, self.extras_seen = [], []

    def step(self, state, index):
        values = np.asarray(self.losses[index], np.float32)
        metrics = {"loss": (values.sum(), float(values.size)), "nonfinite": (float(self.skipped[index]), float(values.size))}
        return state.replace(step=state.step + 1), metrics

    def steps(self, **kwargs):
        def extras(step, state, metrics):
            self.extras_seen.append((step, float(metrics["loss"][0])))
            return {"learning_rate": 0.5}

        def export(state):
            self.exported.append(int(state.step))
            return None

        return StageSteps(
            step=self.step, position=lambda s: {"step": s}, num_steps=self.num_steps, row_extras=extras,
            export=export, **kwargs,
        )  # fmt: skip


def _run(workdir, stage, settings, hooks=()):
    with RunScaffold(_config(), workdir) as run:
        return run_steps(run, stage.steps(), _state(), start_step=0, settings=settings, hooks=hooks)


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_logged_row_is_the_mean_over_its_interval_and_counts_its_skipped_updates(tmp_path):
    # Step s has two updates with losses s and 3s: intervals of 3 steps, then the last step alone.
    stage = FakeStage(7, [[s, 3 * s] for s in range(1, 8)], skipped=[0, 1, 0, 0, 0, 0, 2])
    outcome = _run(tmp_path, stage, LoopSettings(log_every_steps=3, nonfinite_policy="skip"))
    rows = _rows(tmp_path)
    assert [row["step"] for row in rows] == [3, 6, 7]
    # Sums of a few small integers, exact in float32.
    assert [row["loss"] for row in rows] == [(4 + 8 + 12) / 6, (16 + 20 + 24) / 6, 28 / 2]
    assert [row["nonfinite"] for row in rows] == [1.0, 0.0, 2.0]  # updates skipped, not a mean
    assert all(row["learning_rate"] == 0.5 for row in rows)
    assert stage.extras_seen == [(3, 12.0), (6, 24.0), (7, 28.0)]  # the logged step's own metrics
    assert outcome.logged == {k: v for k, v in rows[-1].items() if k != "step"}
    assert stage.exported == [7] and (tmp_path / FINISHED_MARKER).exists()


def test_hooks_run_at_the_start_every_n_steps_and_at_the_end(tmp_path):
    calls = []

    def eval_hook(step, state):
        calls.append(("eval", step))
        return {"eval/loss": float(step)}

    def samples_hook(step, state):
        calls.append(("samples", step))

    hooks = [Hook("eval", eval_hook, every=2, at_start=True), Hook("samples", samples_hook, every=3)]
    outcome = _run(tmp_path, FakeStage(5, [[1.0]] * 5), LoopSettings(), hooks)
    assert calls == [
        ("eval", 0), ("eval", 2), ("samples", 3), ("eval", 4), ("eval", 5), ("samples", 5),
    ]  # fmt: skip
    assert outcome.hook_metrics == {"eval": {"eval/loss": 5.0}}
    assert [row["step"] for row in _rows(tmp_path) if "eval/loss" in row] == [0, 2, 4, 5]


def test_stop_policy_stops_at_the_first_skipped_step(tmp_path):
    stage = FakeStage(5, [[1.0]] * 5, skipped=[0, 1, 0, 0, 0])
    with pytest.raises(NonFiniteLossError, match=r"at step 2 \(loss=1.0, grad_norm=None\); the update was skipped"):
        _run(tmp_path, stage, LoopSettings(nonfinite_policy="stop"))
    assert stage.exported == [] and not (tmp_path / FINISHED_MARKER).exists()


def test_skip_policy_stops_after_the_consecutive_limit_whatever_the_log_interval(tmp_path):
    for log_every in (1, 4):
        stage = FakeStage(8, [[1.0, 2.0]] * 8, skipped=[0, 2, 1, 2, 0, 0, 0, 0])
        settings = LoopSettings(log_every_steps=log_every, nonfinite_policy="skip", max_consecutive_skipped_steps=3)
        with pytest.raises(NonFiniteLossError, match=r"step 4 .*2 of its 2 updates were skipped: 3 non-finite steps"):
            _run(tmp_path / str(log_every), stage, settings)
        assert stage.exported == []


def test_a_run_that_applied_no_update_is_not_exported(tmp_path):
    stage = FakeStage(3, [[1.0, 1.0]] * 3, skipped=[2, 2, 2])
    with pytest.raises(NonFiniteLossError, match=r"no step of this run \(1..3\) updated the parameters"):
        _run(tmp_path / "none", stage, LoopSettings(nonfinite_policy="skip"))
    assert stage.exported == [] and not (tmp_path / "none" / FINISHED_MARKER).exists()
    # One applied update of six is enough: the model changed, so it is exported.
    some = FakeStage(3, [[1.0, 1.0]] * 3, skipped=[2, 1, 2])
    _run(tmp_path / "some", some, LoopSettings(nonfinite_policy="skip"))
    assert some.exported == [3]


def test_merged_row_reads_device_and_host_pairs():
    pending = [
        {"loss": (jnp.float32(2.0), jnp.float32(1.0)), "nonfinite": (jnp.float32(0.0), jnp.float32(1.0))},
        {"loss": (np.float32(4.0), 1.0), "nonfinite": (1.0, 1.0), "data/x": (5.0, 1.0)},
    ]
    assert merged_row(pending) == {"loss": 3.0, "nonfinite": 1.0, "data/x": 5.0}


@pytest.mark.parametrize(
    "values,field",
    [
        (dict(nonfinite_policy="skpi"), "config.nonfinite_policy"),
        (dict(max_consecutive_skipped_steps=-1), "config.max_consecutive_skipped_steps"),
        (dict(log_every_steps=0), "config.log_every_steps"),
    ],
)
def test_bad_loop_settings_name_the_field(values, field):
    config = _config()
    config.update(values)
    with pytest.raises(UserError, match=field):
        LoopSettings.from_config(config)
