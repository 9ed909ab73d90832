"""The KL coefficient's controller: fixed, or adapted toward a target KL by Ziegler et al.'s rule
(coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon), saved and restored with a checkpoint, and the
start-up checks of the KL and minibatch settings."""

import json

import pytest

from dpo_jax import UserError
from dpo_jax.config.defaults import base_config
from dpo_jax.ppo.kl_control import KLController, kl_controller, validate_kl_settings
from dpo_jax.ppo.settings import resolve_ppo_sizes

# A handful of float64 operations on values of order 1: a few ulps (2.2e-16 each).
REL = 1e-15


def settings(**values):
    config = base_config().ppo
    config.update(values)
    return config


@pytest.mark.parametrize(
    "kl,expected",
    [
        (9.0, 0.2 * (1 + 0.2 * 64 / 10000)),  # 50% above the target: the error is clipped to +0.2
        (6.6, 0.2 * (1 + 0.1 * 64 / 10000)),  # 10% above: proportional
        (5.4, 0.2 * (1 - 0.1 * 64 / 10000)),  # 10% below
        (-1.0, 0.2 * (1 - 0.2 * 64 / 10000)),  # a negative sampled KL: clipped to -0.2
        (6.0, 0.2),  # on target: unchanged
    ],
)
def test_adaptive_update_golden_values(kl, expected):
    controller = KLController(0.2, target=6.0, horizon=10000)
    assert controller.update(kl, 64) == pytest.approx(expected, rel=REL)
    assert controller.coef == pytest.approx(expected, rel=REL)


def test_the_coefficient_moves_toward_the_target_and_stays_fixed_without_one():
    above, below, fixed = KLController(0.1, 1.0, 100), KLController(0.1, 1.0, 100), KLController(0.1)
    for step in range(1, 6):
        above.update(3.0, 10)  # KL above the target: the penalty grows by 2% a batch
        below.update(0.0, 10)
        fixed.update(3.0, 10)
        assert above.coef == pytest.approx(0.1 * 1.02**step, rel=step * REL)
        assert below.coef == pytest.approx(0.1 * 0.98**step, rel=step * REL)
    assert fixed.coef == 0.1 and not fixed.adaptive
    below.update(float("nan"), 10)  # a diverged step leaves the coefficient as it was
    assert below.coef == pytest.approx(0.1 * 0.98**5, rel=5 * REL)


def test_the_coefficient_is_restored_from_a_checkpoint_position():
    controller = kl_controller(settings(kl_coef=0.05, kl_target=4.0, kl_horizon=500))
    assert (controller.coef, controller.target, controller.horizon) == (0.05, 4.0, 500.0)
    controller.update(10.0, 32)
    position = json.loads(json.dumps({"step": 3, **controller.position()}))  # as the checkpointer keeps it
    resumed = kl_controller(settings(kl_coef=0.05, kl_target=4.0, kl_horizon=500), position)
    assert resumed.coef == controller.coef != 0.05
    # A checkpoint from before the controller existed: the configured coefficient.
    assert kl_controller(settings(kl_coef=0.05), {"step": 3}).coef == 0.05


@pytest.mark.parametrize(
    "values,field",
    [
        (dict(kl_target=-1.0), "config.ppo.kl_target"),
        (dict(kl_target=2.0, kl_horizon=0), "config.ppo.kl_horizon"),
        (dict(kl_target=2.0, kl_coef=0.0), "config.ppo.kl_coef"),
    ],
)
def test_bad_kl_settings_name_the_field(values, field):
    with pytest.raises(UserError, match=field):
        validate_kl_settings(settings(**values))


def test_minibatch_size_sets_the_number_of_minibatches():
    config = base_config()
    config.global_batch_size = 64
    config.ppo.minibatch_size = 8
    resolved = resolve_ppo_sizes(config)
    assert (
        resolved.ppo.num_minibatches == 8 and config.ppo.num_minibatches == base_config().ppo.num_minibatches
    )
    config.ppo.minibatch_size = 0  # unset: num_minibatches as given
    assert resolve_ppo_sizes(config) is config
    for bad in (24, 128, -8):
        config.ppo.minibatch_size = bad
        with pytest.raises(UserError, match="config.ppo.minibatch_size"):
            resolve_ppo_sizes(config)
