"""What the loop logs: the learning rate the optimizer applied (not the step's schedule) and the objective."""

import jax.numpy as jnp
import ml_collections
import numpy as np

from dpo_jax.run import optim
from dpo_jax.run.scaffold import applied_learning_rate
from dpo_jax.training.loop import describe_objective
from tests.train_helpers import tiny_config


def test_logged_learning_rate_follows_the_optimizer_count_past_skipped_steps():
    config = ml_collections.ConfigDict(
        dict(
            optimizer="rmsprop",
            learning_rate=1.0,
            warmup_steps=10,
            lr_schedule="constant",
            total_steps=100,
            weight_decay=0.0,
            max_grad_norm=10.0,
        )
    )
    tx, schedule = optim.make_optimizer(config)
    params = {"w": jnp.ones((2,))}
    opt_state = tx.init(params)
    for _ in range(3):  # three applied updates
        _, opt_state = tx.update({"w": jnp.ones((2,))}, opt_state, params)
    applied = {"nonfinite": (np.float32(0.0), np.float32(1.0))}
    skipped = {"nonfinite": (np.float32(1.0), np.float32(1.0))}
    # Say step 5 ran after two skipped steps: the third applied update used schedule(2), not the
    # schedule(step - 1) = schedule(4) that was logged before.
    assert applied_learning_rate(schedule, opt_state, applied) == float(schedule(2)) == np.float32(3 / 11)
    assert applied_learning_rate(schedule, opt_state, skipped) == float(schedule(3))


def test_the_objective_line_says_summed_or_token_mean_logps():
    assert "summed log-probs" in describe_objective(tiny_config("hh", "tiny", loss="ipo"))
    mean = describe_objective(tiny_config("hh", "tiny", loss="ipo", length_normalize=True))
    assert mean.startswith("loss ipo, beta 0.1, token-mean log-probs (TRL's convention")


def test_the_objective_line_names_a_reference_only_where_the_stage_has_one():
    assert describe_objective(tiny_config("hh", "tiny")).endswith("with a reference model")
    assert describe_objective(tiny_config("hh", "sft,tiny")).endswith("no reference model")
    assert describe_objective(tiny_config("hh", "tiny", reference_free=True)).endswith("reference-free")
