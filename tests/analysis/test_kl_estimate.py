"""The sampled KL(pi || pi_ref) estimate against the exact KL on the synthetic task's tiny models, and the
clustered standard error on hand-computed data."""

import numpy as np
import pytest

from dpo_jax.analysis.kl_estimate import clustered_mean, kl_estimate
from dpo_jax.analysis.teacher_forcing import score_completions
from dpo_jax.sampling.batched import sample_token_ids
from dpo_jax.sampling.settings import SamplingSettings
from dpo_jax.synthetic import SyntheticTask, policy_stats
from dpo_jax.synthetic.tables import all_completion_logprobs
from tests.synthetic.tiny_models import tiny_lm

VOCAB, PROMPT_LENGTH, RESPONSE_LENGTH = 8, 4, 3


def test_sampled_kl_matches_the_exact_kl():
    task = SyntheticTask(vocab_size=VOCAB, prompt_length=PROMPT_LENGTH, response_length=RESPONSE_LENGTH)
    prompts = task.sample_prompts(32, np.random.default_rng(0))
    model, policy = tiny_lm("gpt2", VOCAB, seed=1, std=0.5)
    _, reference = tiny_lm("gpt2", VOCAB, seed=2, std=0.5)
    tables = {
        name: all_completion_logprobs(
            model, params, prompts, vocab_size=VOCAB, response_length=RESPONSE_LENGTH, batch_size=2048
        )
        for name, params in (("policy", policy), ("reference", reference))
    }
    exact = policy_stats(tables["policy"], tables["reference"], np.zeros_like(tables["policy"]))["kl"]

    settings = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=RESPONSE_LENGTH)
    estimates = []
    for seed in range(4):  # one compiled program: only the random numbers change
        samples = sample_token_ids(
            model,
            policy,
            prompts,
            np.ones_like(prompts),
            settings=settings,
            num_samples=16,
            batch_size=256,
            seed=seed,
            eos_id=None,
            pad_id=0,
        )
        assert samples.tokens.shape == (32 * 16, RESPONSE_LENGTH) and samples.mask.all()
        # The sampler's log pi is the teacher-forced one, and the exact table's entry for that completion.
        assert np.allclose(
            score_completions(model, policy, samples, batch_size=256), samples.logps, atol=1e-4
        )
        flat = (samples.tokens * VOCAB ** np.arange(RESPONSE_LENGTH)[::-1]).sum(axis=1)
        assert np.allclose(tables["policy"][samples.prompt_index, flat], samples.logps, atol=1e-4)
        reference_logps = score_completions(model, reference, samples, batch_size=256)
        estimates.append(kl_estimate(samples.logps, reference_logps, samples.prompt_index))
    assert exact > 1.0  # the two random models differ (about 3 nats): the test is not 0 == 0
    for estimate in estimates:
        assert estimate["num_samples"] == 512 and estimate["num_prompts"] == 32
        assert 0 < estimate["kl_stderr"] < 0.1 * exact
        assert abs(estimate["kl"] - exact) < 3 * estimate["kl_stderr"], (estimate, exact)
    # Pooled over the four independent runs, the error shrinks as 1/sqrt(4) and still covers the truth.
    pooled = np.mean([e["kl"] for e in estimates])
    pooled_stderr = np.sqrt(np.sum([e["kl_stderr"] ** 2 for e in estimates])) / len(estimates)
    assert abs(pooled - exact) < 3 * pooled_stderr, (pooled, pooled_stderr, exact)


def test_clustered_standard_error():
    values = np.array([1.0, 3.0, 2.0, 2.0, 7.0, 5.0])
    prompts = np.array([0, 0, 1, 1, 2, 2])
    stats = clustered_mean(values, prompts)
    per_prompt = np.array([2.0, 2.0, 6.0])
    assert stats["mean"] == pytest.approx(10.0 / 3)
    assert stats["stderr"] == pytest.approx(np.std(per_prompt, ddof=1) / np.sqrt(3))
    assert clustered_mean(values, np.arange(6))["stderr"] == pytest.approx(
        np.std(values, ddof=1) / np.sqrt(6)
    )
    with pytest.raises(ValueError, match="unequal numbers of samples"):
        clustered_mean(values, np.array([0, 0, 0, 1, 1, 2]))
