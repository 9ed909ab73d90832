"""Best-of-N's selection and KL: the reward judge's argmax in each group of N (shared by win rates and the
frontier), and the analytic KL log N - (N-1)/N, checked against the exact KL of Best-of-N on discrete
distributions (equal in the continuum limit, below it where outcomes have mass)."""

import math

import numpy as np
import pytest

from dpo_jax.analysis.best_of_n import best_of_n_kl, best_of_n_rows, select_best_of_n
from dpo_jax.judges import ScoringJudge
from dpo_jax.sampling.batched import Samples


class FakeReward(ScoringJudge):
    """Scores a response by the number written in it; records what it was asked."""

    name = "fake"

    def __init__(self):
        self.asked = []

    def score(self, prompts, responses):
        self.asked.append(list(zip(prompts, responses)))
        return np.array([float(r) for r in responses])


def _samples(texts: list[str], per_prompt: int) -> Samples:
    rows = len(texts)
    zeros = np.zeros((rows, 1), np.int32)
    return Samples(zeros, zeros, zeros, zeros, np.zeros(rows), texts, per_prompt)


def test_rows_are_each_groups_argmax_first_on_ties():
    scores = [0.1, 0.9, 0.5, 0.2, 3.0, 3.0, -1.0, -2.0]
    assert best_of_n_rows(scores, 2).tolist() == [1, 2, 4, 6]
    assert best_of_n_rows(scores, 4).tolist() == [1, 4]
    assert best_of_n_rows(scores, 1).tolist() == list(range(8))
    with pytest.raises(ValueError, match="groups of n"):
        best_of_n_rows(scores, 3)


def test_selection_keeps_the_reward_judges_best_of_each_group():
    # Two prompts, four samples each; the groups of two are (0, 1), (2, 3), (4, 5), (6, 7).
    samples = _samples(["1", "5", "7", "2", "0", "3", "9", "8"], per_prompt=4)
    judge = FakeReward()
    assert select_best_of_n(judge, ["p", "q"], samples, 2).tolist() == [1, 2, 5, 6]
    assert judge.asked == [
        [("p", "1"), ("p", "5"), ("p", "7"), ("p", "2")]
        + [
            ("q", "0"),
            ("q", "3"),
            ("q", "9"),
            ("q", "8"),
        ]
    ]  # each sample is scored with its own prompt
    assert select_best_of_n(judge, ["p", "q"], samples, 4).tolist() == [2, 6]
    assert select_best_of_n(judge, ["p", "q"], samples, 2, rows=[0, 1, 4, 5]).tolist() == [1, 5]
    with pytest.raises(ValueError, match="groups of 2 samples of one prompt"):
        select_best_of_n(judge, ["p", "q"], samples, 2, rows=[3, 4])  # a group across two prompts


def _exact_best_of_n_kl(probs: np.ndarray, n: int) -> float:
    """KL(BoN || p) for outcomes in increasing reward order (distinct rewards): P(best = i) = F_i^n - F_{i-1}^n."""
    cdf = np.cumsum(probs)
    best = cdf**n - np.concatenate([[0.0], cdf[:-1]]) ** n
    kept = best > 0  # the least rewarded outcomes' chance underflows at large n; 0 log 0 = 0
    return float(np.sum(best[kept] * np.log(best[kept] / probs[kept])))


@pytest.mark.parametrize("n", [2, 4, 16, 128])
def test_the_kl_is_log_n_minus_n_minus_1_over_n_and_bounds_the_exact_kl(n):
    assert best_of_n_kl(n) == pytest.approx(math.log(n) - (n - 1) / n, abs=1e-15)
    rng = np.random.default_rng(n)
    for outcomes in (2, 5, 50):
        probs = rng.dirichlet(np.ones(outcomes))
        assert _exact_best_of_n_kl(probs, n) <= best_of_n_kl(n) + 1e-12
    # Many equally likely outcomes approach the continuum, where the formula is exact: the gap is the
    # discretisation's, a Riemann sum's O((n / m)^2) for m outcomes.
    many = 10_000
    exact = _exact_best_of_n_kl(np.full(many, 1 / many), n)
    assert exact <= best_of_n_kl(n) and exact == pytest.approx(best_of_n_kl(n), abs=(n / many) ** 2)


def test_n_of_one_is_the_policy_itself():
    assert best_of_n_kl(1) == 0.0
    with pytest.raises(ValueError, match="N >= 1"):
        best_of_n_kl(0)
