"""SyntheticTask: completions enumerate the response space, the generator samples what it scores,
pairs follow pi_ref and Bradley-Terry, and the reward scale gives an informative frontier."""

import numpy as np
import pytest

from dpo_jax.synthetic import SyntheticTask, frontier, log_normalise

SMALL = SyntheticTask(vocab_size=3, prompt_length=2, response_length=2, seed=1)


def binomial_z(successes, trials, probability):
    return (successes - trials * probability) / np.sqrt(trials * probability * (1 - probability))


def chi_square(counts, probabilities):
    expected = counts.sum() * probabilities
    return np.sum((counts - expected) ** 2 / expected)


def test_completions_enumerate_every_response_once():
    task = SyntheticTask()
    completions = task.all_completions()
    assert completions.shape == (8**4, 4) and completions.dtype == np.int32
    assert len(np.unique(completions, axis=0)) == len(completions)
    np.testing.assert_array_equal(task.completion_index(completions), np.arange(len(completions)))
    prompts = task.sample_prompts(5, 0)
    assert prompts.shape == (5, 4) and prompts.min() >= 0 and prompts.max() < 8
    np.testing.assert_array_equal(prompts, task.sample_prompts(5, np.random.default_rng(0)))


def test_generator_samples_follow_generator_logprobs():
    prompt = SMALL.sample_prompts(1, 3)
    logprobs = SMALL.generator_logprobs(prompt)
    np.testing.assert_allclose(np.exp(logprobs).sum(-1), 1.0, atol=1e-12)
    samples = SMALL.generator_samples(np.repeat(prompt, 6000, axis=0), 4)
    counts = np.bincount(SMALL.completion_index(samples), minlength=SMALL.num_completions)
    # 99.99th percentile of chi-square with 8 degrees of freedom is about 31.8.
    assert chi_square(counts, np.exp(logprobs[0])) < 31.8


def test_reward_is_prompt_dependent_and_matches_its_pairs():
    task = SyntheticTask()
    prompts = task.sample_prompts(4, 5)
    reward = task.reward(prompts, task.all_completions())
    assert reward.shape == (4, task.num_completions)
    assert not np.allclose(reward[0], reward[1])


def test_pairs_come_from_pi_ref_and_are_labelled_by_bradley_terry():
    prompts = SMALL.sample_prompts(2, 6)
    logp_ref = log_normalise(np.random.default_rng(7).normal(0.0, 1.0, (2, SMALL.num_completions)))
    pairs_per_prompt = 20000
    chosen, rejected, prompt_index = SMALL.sample_pairs(prompts, logp_ref, 8, pairs_per_prompt)
    reward = SMALL.reward(prompts, SMALL.all_completions())
    probs = np.exp(logp_ref)
    for row in range(2):
        here = prompt_index == row
        winner, loser = SMALL.completion_index(chosen[here]), SMALL.completion_index(rejected[here])
        # Draws with y1 == y2 are dropped: pairs_per_prompt * sum_y pi_ref(y)^2 of them on average.
        assert abs(binomial_z(pairs_per_prompt - here.sum(), pairs_per_prompt, np.sum(probs[row] ** 2))) < 4.5
        low, high = np.minimum(winner, loser), np.maximum(winner, loser)
        pair_counts = np.bincount(low * SMALL.num_completions + high, minlength=SMALL.num_completions**2)
        upper = np.triu(np.ones((SMALL.num_completions,) * 2, bool), k=1).ravel()
        pair_probs = (2 * np.outer(probs[row], probs[row])).ravel()[upper]
        # 99.99th percentile of chi-square with 35 degrees of freedom is about 74.
        assert chi_square(pair_counts[upper], pair_probs / pair_probs.sum()) < 74
        for a, b in zip(*np.nonzero(np.triu(np.ones((SMALL.num_completions,) * 2), k=1))):
            trials = np.sum((low == a) & (high == b))
            if trials < 200:
                continue
            a_wins = np.sum((winner == a) & (loser == b))
            p_a = 1.0 / (1.0 + np.exp(reward[row, b] - reward[row, a]))
            assert abs(binomial_z(a_wins, trials, p_a)) < 4.5, (a, b, a_wins, trials, p_a)


def test_reward_scale_gives_an_informative_frontier_from_the_generator():
    task = SyntheticTask()
    prompts = task.sample_prompts(32, 9)
    logp_ref = task.generator_logprobs(prompts)
    points = frontier(logp_ref, task.reward(prompts, task.all_completions()), [0.05, 1.0])
    assert points[0]["kl"] > 3.0  # strong optimisation moves far from pi_ref
    assert 0.02 < points[1]["kl"] < 0.5  # weak optimisation stays close


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="logp_ref"):
        SMALL.sample_pairs(SMALL.sample_prompts(2, 0), np.zeros((3, SMALL.num_completions)), 0, 4)
    with pytest.raises(ValueError, match="vocab_size"):
        SyntheticTask(vocab_size=1)
