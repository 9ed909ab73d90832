"""PPO's maths against a hand-computed example (every number below is worked out in the comments)."""

import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.objectives.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    generalized_advantages,
    kl_penalised_rewards,
    masked_whiten,
    token_entropy,
)

MASK = jnp.array([[1.0, 1.0, 0.0]])  # one response of 2 tokens, padded to 3


def test_kl_penalised_rewards_and_gae_by_hand():
    # log-ratio = [-1 - -1.5, -2 - -1] = [0.5, -1]; r = -0.1 * log-ratio, plus the score 2 on token 1.
    rewards, log_ratio = kl_penalised_rewards(
        jnp.array([2.0]), jnp.array([[-1.0, -2.0, 0.0]]), jnp.array([[-1.5, -1.0, 0.0]]), MASK, kl_coef=0.1
    )
    np.testing.assert_allclose(log_ratio, [[0.5, -1.0, 0.0]])
    np.testing.assert_allclose(rewards, [[-0.05, 2.1, 0.0]], atol=1e-7)
    # V = [0.5, 1.0, (9 on padding, ignored)], gamma 1, lambda 0.5:
    #   delta_1 = 2.1 + 0 - 1.0 = 1.1,  delta_0 = -0.05 + 1.0 - 0.5 = 0.45
    #   A_1 = 1.1,  A_0 = 0.45 + 0.5 * 1.1 = 1.0;  returns = A + V = [1.5, 2.1]
    advantages, returns = generalized_advantages(
        rewards, jnp.array([[0.5, 1.0, 9.0]]), MASK, gamma=1.0, lam=0.5
    )
    np.testing.assert_allclose(advantages, [[1.0, 1.1, 0.0]], atol=1e-6)
    np.testing.assert_allclose(returns, [[1.5, 2.1, 0.0]], atol=1e-6)


def test_gae_with_discount_matches_the_recursion_row_by_row():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    lengths = [6, 3, 1, 4]
    mask = (np.arange(6)[None] < np.array(lengths)[:, None]).astype(np.float32)
    advantages, _ = generalized_advantages(
        jnp.asarray(rewards * mask), jnp.asarray(values), jnp.asarray(mask), gamma=0.9, lam=0.8
    )
    for row, n in enumerate(lengths):
        expected, following = np.zeros(n), 0.0
        for t in reversed(range(n)):
            next_value = values[row, t + 1] if t + 1 < n else 0.0
            following = rewards[row, t] + 0.9 * next_value - values[row, t] + 0.9 * 0.8 * following
            expected[t] = following
        np.testing.assert_allclose(advantages[row, :n], expected, atol=1e-5)
        assert np.all(np.asarray(advantages[row, n:]) == 0)


def test_whitening_uses_the_unbiased_variance_over_real_tokens():
    # [1, 2, 3] real: mean 2, unbiased variance 1 -> [-1, 0, 1]; the padding stays 0.
    whitened = masked_whiten(jnp.array([[1.0, 2.0, 3.0, 50.0]]), jnp.array([[1, 1, 1, 0]]), eps=0.0)
    np.testing.assert_allclose(whitened, [[-1.0, 0.0, 1.0, 0.0]], atol=1e-6)
    kept = masked_whiten(
        jnp.array([[1.0, 2.0, 3.0, 50.0]]), jnp.array([[1, 1, 1, 0]]), shift_mean=False, eps=0.0
    )
    np.testing.assert_allclose(kept, [[1.0, 2.0, 3.0, 0.0]], atol=1e-6)


def test_clipped_policy_loss_by_hand():
    # rho_0 = e^0.1 = 1.10517 (inside the clip range): term -A rho = -1.10517
    # rho_1 = e^-0.5 = 0.60653 with A = -1: unclipped 0.60653, clipped 0.8 -> 0.8 (clipped)
    loss, clip_fraction, approx_kl = clipped_policy_loss(
        jnp.array([[-0.9, -2.5, 7.0]]),
        jnp.array([[-1.0, -2.0, 0.0]]),
        jnp.array([[1.0, -1.0, 3.0]]),
        MASK,
        clip_range=0.2,
    )
    assert loss == pytest.approx((-np.exp(0.1) + 0.8) / 2, abs=1e-6)
    assert clip_fraction == pytest.approx(0.5)
    k3 = [np.expm1(x) - x for x in (0.1, -0.5)]
    assert approx_kl == pytest.approx(np.mean(k3), abs=1e-6)


def test_clipped_value_loss_by_hand():
    # V = [1, 0], V_old = [0.5, 0.5], R = [1.5, 2.1], clip 0.2 -> V_clipped = [0.7, 0.3]
    # (V - R)^2 = [0.25, 4.41], (V_clipped - R)^2 = [0.64, 3.24] -> max [0.64, 4.41]; 0.5 * mean = 1.2625
    loss, clipped = clipped_value_loss(
        jnp.array([[1.0, 0.0, 5.0]]),
        jnp.array([[0.5, 0.5, 0.0]]),
        jnp.array([[1.5, 2.1, 0.0]]),
        MASK,
        clip_range=0.2,
    )
    assert loss == pytest.approx(1.2625, abs=1e-6) and clipped == pytest.approx(0.5)


def test_entropy_of_uniform_and_peaked_distributions():
    np.testing.assert_allclose(token_entropy(jnp.zeros((2, 8))), np.log(8.0), rtol=1e-6)
    assert float(token_entropy(jnp.array([0.0, -1e4]))) == pytest.approx(0.0, abs=1e-6)
