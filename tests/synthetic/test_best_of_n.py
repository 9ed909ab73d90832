"""Exact best-of-N: N = 1 is pi_ref, the distribution matches Monte-Carlo best-of-N (ties included), and the
KL stays below log N - (N - 1) / N: close to it without ties, clearly below with them."""

import numpy as np
import pytest

from dpo_jax.synthetic.best_of_n import best_of_n_logprobs, kl_upper_bound
from dpo_jax.synthetic.exact import log_normalise, policy_stats


def _tables(seed=0, prompts=3, completions=7):
    rng = np.random.default_rng(seed)
    return log_normalise(rng.normal(size=(prompts, completions))), rng.normal(size=(prompts, completions))


def test_n_equal_one_is_the_reference():
    logp_ref, proxy = _tables()
    np.testing.assert_allclose(best_of_n_logprobs(logp_ref, proxy, 1), logp_ref, atol=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_matches_monte_carlo_best_of_n(ties):
    logp_ref, proxy = _tables(seed=1)
    if ties:
        proxy = np.round(proxy)  # several completions share a proxy reward
    n, draws = 4, 200_000
    rng = np.random.default_rng(2)
    for row in range(len(logp_ref)):
        samples = rng.choice(logp_ref.shape[1], size=(draws, n), p=np.exp(logp_ref[row]))
        scores = proxy[row][samples]
        best = scores.max(axis=1, keepdims=True)
        # Ties broken uniformly among the tied draws.
        tied = scores == best
        pick = np.argmax(tied * rng.random(tied.shape), axis=1)
        winners = samples[np.arange(draws), pick]
        empirical = np.bincount(winners, minlength=logp_ref.shape[1]) / draws
        exact = np.exp(best_of_n_logprobs(logp_ref[row : row + 1], proxy[row : row + 1], n)[0])
        np.testing.assert_allclose(empirical, exact, atol=4e-3)


def test_kl_follows_the_known_bound():
    logp_ref, proxy = _tables(seed=3, prompts=2, completions=4096)
    true_reward = proxy  # the proxy is the true reward here: reward must rise with N
    previous = -np.inf
    for n in (1, 2, 4, 16, 128):
        stats = policy_stats(best_of_n_logprobs(logp_ref, proxy, n), logp_ref, true_reward)
        # Equal for a continuous pi_ref; below it, by little when no completion carries much mass.
        assert kl_upper_bound(n) - 1e-3 < stats["kl"] <= kl_upper_bound(n) + 1e-12
        assert stats["reward"] > previous
        previous = stats["reward"]
    tied = np.round(proxy)
    for n in (2, 8):
        assert policy_stats(best_of_n_logprobs(logp_ref, tied, n), logp_ref, tied)["kl"] < kl_upper_bound(n)


def test_bad_n_is_refused():
    logp_ref, proxy = _tables()
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_logprobs(logp_ref, proxy, 0)
