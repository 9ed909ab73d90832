"""PPO end to end on a tiny random GPT-2 over the 8 fake CPU devices: the reward goes up on a trivial task,
a stopped and resumed run equals an uninterrupted one, and the exported policy loads as a causal LM."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from dpo_jax.config.defaults import base_config
from dpo_jax.models import from_hf
from dpo_jax.ppo import run_ppo

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


def run(workdir, steps):
    return run_ppo(
        config(steps), str(workdir), PROMPTS, np.ones_like(PROMPTS), count_target, eos_id=None, pad_id=0
    )


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
