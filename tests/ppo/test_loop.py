"""PPO end to end on a tiny random GPT-2 over the 8 fake CPU devices: the reward goes up on a trivial task,
a stopped and resumed run equals an uninterrupted one, the exported policy loads as a causal LM, and
the loop's fields mean what they mean for DPO (the scaffold's one loop, `run.loop`): metrics merged
over the log interval, non-finite steps skipped, counted and refused an export."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from dpo_jax.config.defaults import base_config
from dpo_jax.models import from_hf
from dpo_jax.ppo import run_ppo
from dpo_jax.run import FINISHED_MARKER, NonFiniteLossError

VOCAB, TARGET = 8, 3


def config(steps: int):
    c = base_config()
    c.model.name_or_path = "random"
    c.model.random_init_config = ml_collections.ConfigDict(
        dict(
            model_type="gpt2",
            n_layer=1,
            n_embd=16,
            n_head=2,
            n_positions=8,
            vocab_size=VOCAB,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    c.model.dtype = "float32"
    c.reference.param_dtype = "float32"
    c.optimizer = "adamw"
    c.learning_rate = 3e-2
    c.warmup_steps = 0
    c.global_batch_size = 32
    c.num_train_steps = steps
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.tensorboard = False
    c.progress_bar = False
    c.ppo.max_new_tokens = 3
    c.ppo.kl_coef = 0.01
    c.ppo.num_minibatches = 2
    c.ppo.num_epochs = 2
    return c


def count_target(prompt_ids, prompt_mask, response_ids, response_mask):
    """The trivial task: one point per response token equal to TARGET."""
    return ((response_ids == TARGET) * response_mask).sum(-1).astype(np.float32)


PROMPTS = np.random.default_rng(0).integers(0, VOCAB, (64, 2)).astype(np.int32)


def run(workdir, steps, **overrides):
    c = config(steps)
    c.update(overrides)
    return run_ppo(c, str(workdir), PROMPTS, np.ones_like(PROMPTS), count_target, eos_id=None, pad_id=0)


def logged(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ppo")
    return workdir, run(workdir, 6)


def test_reward_goes_up_on_a_trivial_task(trained):
    workdir, result = trained
    records = logged(workdir)
    scores = [r["rollout/score"] for r in records if "rollout/score" in r]
    assert len(scores) == 6
    # A random policy hits TARGET 1/8 of the time: 3 tokens -> 0.375 expected; 3 is the maximum.
    assert scores[0] < 0.8 and np.mean(scores[-2:]) > 2.0
    for name in ("rollout/kl", "ppo/entropy", "ppo/clip_fraction", "ppo/value_error", "ppo/approx_kl"):
        assert np.isfinite(records[-1][name])
    assert records[-1]["rollout/kl"] > 0


def test_resume_equals_an_uninterrupted_run(trained, tmp_path):
    workdir, result = trained
    run(tmp_path, 2)  # stops after rollout step 2 (a checkpoint)
    resumed = run(tmp_path, 6)
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_is_the_trained_policy(trained):
    workdir, result = trained
    assert (workdir / "FINISHED").exists()
    model, params = from_hf(str(workdir / "export"))
    ids = PROMPTS[:4]
    np.testing.assert_allclose(
        np.asarray(model.apply({"params": params}, ids)),
        np.asarray(result.policy_model.apply({"params": jax.device_get(result.params["policy"])}, ids)),
        atol=1e-5,
    )


def test_metrics_are_merged_over_the_log_interval_like_dpo(trained, tmp_path):
    workdir, _ = trained
    per_step = {r["step"]: r for r in logged(workdir)}
    run(tmp_path, 6, log_every_steps=3)  # the same run (log_every_steps changes no update), logged every 3
    rows = logged(tmp_path)
    assert [r["step"] for r in rows] == [3, 6]
    for row in rows:
        steps = [per_step[s] for s in range(row["step"] - 2, row["step"] + 1)]
        # Each step has 2 epochs x 2 minibatches of updates and one rollout: the interval's mean is the
        # mean of its steps' means. Sums of 3 float32 means (12 updates): a few float32 ulps.
        for name in ("rollout/score", "rollout/kl", "ppo/kl_coef", "ppo/loss", "ppo/entropy", "ppo/grad_norm"):
            np.testing.assert_allclose(row[name], np.mean([s[name] for s in steps]), rtol=1e-5, err_msg=name)
        assert row["nonfinite"] == sum(s["nonfinite"] for s in steps) == 0.0  # a count of skipped updates
        assert row["learning_rate"] == steps[-1]["learning_rate"]


def _diverging(workdir, steps, **loop):
    """A PPO run whose every update is non-finite: an infinite value-loss weight makes each loss inf."""
    c = config(steps)
    c.update(dict(nonfinite_policy="skip", checkpoint_every_steps=1, **loop))
    c.ppo.vf_coef = float("inf")
    return run_ppo(c, str(workdir), PROMPTS, np.ones_like(PROMPTS), count_target, eos_id=None, pad_id=0)


def test_nonfinite_skip_stops_and_refuses_to_export_like_dpo(tmp_path):
    # As tests/training/test_loop_faults.py asks of DPO: the same messages, no FINISHED, no export.
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*4 of its 4 updates were skipped: 2 non-finite steps in a"):
        _diverging(tmp_path / "limit", 4, max_consecutive_skipped_steps=2)
    first = logged(tmp_path / "limit")[0]
    assert first["step"] == 1 and first["nonfinite"] == 4.0 and first["ppo/loss"] is None  # JSON null
    with pytest.raises(NonFiniteLossError, match=r"no step of this run \(1..2\) updated the parameters"):
        _diverging(tmp_path / "short", 2, max_consecutive_skipped_steps=0)
    for name in ("limit", "short"):
        assert not (tmp_path / name / FINISHED_MARKER).exists()
        assert not (tmp_path / name / "export").exists()
