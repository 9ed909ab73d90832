"""Exact evaluation: model tables are normalised and agree with sampling, the closed-form optimum is
optimal, and the frontier and its inverse are consistent."""

import jax
import numpy as np
import pytest

from dpo_jax.sampling import SamplingSettings, generate
from dpo_jax.synthetic import (
    SyntheticTask,
    completion_logprobs,
    frontier,
    gain_ratio,
    log_normalise,
    optimal_logprobs,
    optimum_reward_at_kl,
    plot_frontier,
    policy_stats,
)
from tests.synthetic.tiny_models import tiny_lm

TINY = SyntheticTask(vocab_size=4, prompt_length=3, response_length=3, seed=2)
BETAS = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]


def apply_gpt2(params, input_ids, attention_mask):
    model, _ = tiny_lm("gpt2", TINY.vocab_size)
    return model.apply({"params": params}, input_ids, attention_mask=attention_mask)


def random_setting(seed, task=TINY, num_prompts=5):
    rng = np.random.default_rng(seed)
    prompts = task.sample_prompts(num_prompts, rng)
    logp_ref = log_normalise(rng.normal(0.0, 1.5, (num_prompts, task.num_completions)))
    return logp_ref, task.reward(prompts, task.all_completions())


def test_model_tables_are_normalised_over_all_completions():
    task = SyntheticTask()  # vocab 8, 4096 completions
    model, params = tiny_lm("gpt2", task.vocab_size, seed=3)
    apply_fn = lambda params, ids, mask: model.apply({"params": params}, ids, attention_mask=mask)
    logp = completion_logprobs(
        apply_fn, params, task.sample_prompts(3, 0), task.all_completions(), batch_size=3000
    )
    assert logp.shape == (3, task.num_completions) and logp.dtype == np.float64
    np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, atol=1e-5)


def test_exact_statistics_agree_with_samples_from_generate():
    _, policy_params = tiny_lm("gpt2", TINY.vocab_size)
    _, reference_params = tiny_lm("gpt2", TINY.vocab_size, seed=1)
    model, _ = tiny_lm("gpt2", TINY.vocab_size)
    prompts = TINY.sample_prompts(4, 1)
    completions = TINY.all_completions()
    logp_policy = completion_logprobs(apply_gpt2, policy_params, prompts, completions, batch_size=256)
    logp_ref = completion_logprobs(apply_gpt2, reference_params, prompts, completions, batch_size=256)
    reward = TINY.reward(prompts, completions)
    exact = policy_stats(logp_policy, logp_ref, reward)

    samples_per_prompt = 1000
    rows = np.repeat(np.arange(len(prompts)), samples_per_prompt)
    out = generate(
        model,
        policy_params,
        prompts[rows],
        np.ones_like(prompts[rows]),
        settings=SamplingSettings(max_new_tokens=TINY.response_length),
        rng=jax.random.key(0),
    )
    index = TINY.completion_index(np.asarray(out["tokens"]))
    sampled_logp = np.asarray(out["logprobs"], np.float64).sum(-1)
    # The sampler's log-probs are the teacher-forced ones of the same completion.
    np.testing.assert_allclose(sampled_logp, logp_policy[rows, index], atol=1e-4)
    # Averaging per prompt first matches the exact statistics' equal weighting of prompts.
    for name, per_sample in (
        ("reward", reward[rows, index]),
        ("kl", logp_policy[rows, index] - logp_ref[rows, index]),
    ):
        per_prompt = per_sample.reshape(len(prompts), samples_per_prompt)
        estimate = per_prompt.mean()
        stderr = np.sqrt(np.mean(per_prompt.var(axis=1)) / (len(prompts) * samples_per_prompt))
        assert abs(estimate - exact[name]) < 4.5 * stderr, (name, estimate, exact[name], stderr)
    assert exact["kl"] > 0.05  # the two models really differ


def test_optimum_meets_its_closed_form():
    logp_ref, reward = random_setting(0)
    for beta in BETAS:
        stats = policy_stats(optimal_logprobs(logp_ref, reward, beta), logp_ref, reward)
        scaled = logp_ref + reward / beta
        top = scaled.max(-1)
        log_z = top + np.log(np.exp(scaled - top[:, None]).sum(-1))
        np.testing.assert_allclose(stats["kl"], stats["reward"] / beta - log_z.mean(), rtol=0, atol=1e-9)


def test_no_policy_beats_the_optimum():
    logp_ref, reward = random_setting(1)
    rng = np.random.default_rng(2)
    for beta in (0.1, 0.5, 2.0):
        optimum = optimal_logprobs(logp_ref, reward, beta)
        best = policy_stats(optimum, logp_ref, reward)
        for scale in (0.01, 0.3, 2.0):
            perturbed = log_normalise(optimum + scale * rng.standard_normal(optimum.shape))
            mixture = np.log(
                0.5 * np.exp(logp_ref) + 0.5 * np.exp(log_normalise(3 * rng.standard_normal(optimum.shape)))
            )
            for other in (perturbed, mixture):
                stats = policy_stats(other, logp_ref, reward)
                # pi* maximises the KL-regularised objective...
                assert stats["reward"] - beta * stats["kl"] <= best["reward"] - beta * best["kl"] + 1e-12
                # ...hence no policy with the same or a smaller KL has more reward.
                assert stats["reward"] <= optimum_reward_at_kl(logp_ref, reward, stats["kl"]) + 1e-9


def test_frontier_is_monotone_and_inverted_by_optimum_reward_at_kl():
    logp_ref, reward = random_setting(3)
    points = frontier(logp_ref, reward, BETAS)
    assert [p["beta"] for p in points] == BETAS
    kls, rewards = np.array([p["kl"] for p in points]), np.array([p["reward"] for p in points])
    assert np.all(np.diff(kls) < 0) and np.all(np.diff(rewards) < 0)
    for point in points:
        np.testing.assert_allclose(
            optimum_reward_at_kl(logp_ref, reward, point["kl"]), point["reward"], rtol=1e-8
        )
    reference = policy_stats(logp_ref, logp_ref, reward)["reward"]
    assert optimum_reward_at_kl(logp_ref, reward, 0.0) == reference
    # Beyond the reward maximiser's KL nothing more is available: E_x max_y r.
    np.testing.assert_allclose(optimum_reward_at_kl(logp_ref, reward, 1e3), reward.max(-1).mean(), rtol=1e-12)


def test_gain_ratio():
    assert gain_ratio(1.5, 1.0, 2.0) == pytest.approx(0.5)
    assert gain_ratio(2.0, 1.0, 2.0) == pytest.approx(1.0)
    assert gain_ratio(0.5, 1.0, 2.0) == pytest.approx(-0.5)
    assert np.isnan(gain_ratio(1.0, 1.0, 1.0))


def test_plot_frontier_writes_a_png(tmp_path):
    logp_ref, reward = random_setting(4)
    points = frontier(logp_ref, reward, BETAS)
    methods = {"dpo": [(p["kl"], 0.9 * p["reward"]) for p in points[:3]], "preferred-ft": [(0.4, 0.1)]}
    path = plot_frontier(points, methods, tmp_path / "plots" / "frontier.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
