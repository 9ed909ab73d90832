"""The frontier's Best-of-N points on a tiny random model: each pick is the selector's best of N samples of
the policy, its reward the measuring judge's clustered mean over prompts, its KL the analytic bound."""

import numpy as np
import pytest

from dpo_jax.analysis.best_of_n import best_of_n_kl
from dpo_jax.analysis.kl_estimate import clustered_mean
from dpo_jax.analysis.sentiment_frontier import FRONTIER_SAMPLING, best_of_n_reward, frontier_points
from dpo_jax.data import load_tokenizer
from dpo_jax.judges import ScoringJudge
from dpo_jax.sampling.prompts import sample_policy
from dpo_jax.sampling.settings import SamplingSettings
from tests.analysis.test_winrate_sweep import LengthReward as Length
from tests.synthetic.tiny_models import tiny_lm

PROMPTS = ["the movie was", "I think that", "a"]
OPTIONS = dict(num_samples=2, settings=FRONTIER_SAMPLING.replace(max_new_tokens=6), batch_size=8, seed=5)


class Vowels(ScoringJudge):
    name = "vowels"

    def score(self, prompts, responses):
        return np.array([sum(c in "aeiou" for c in p + r) for p, r in zip(prompts, responses)], np.float64)


@pytest.fixture(scope="module")
def policy():
    return tiny_lm("gpt2", 512, std=0.5, max_positions=64)


def test_best_of_n_points_select_by_the_reward_model_and_measure_by_the_classifier(policy):
    tokenizer = load_tokenizer("tiny")
    points = best_of_n_reward(policy, tokenizer, PROMPTS, Vowels(), Length(), (2, 4), **OPTIONS)
    # The Ns share one draw: num_samples * max(N) samples per prompt, the first num_samples * N for each N.
    settings = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6)
    draw = sample_policy(*policy, tokenizer, PROMPTS, settings=settings, num_samples=8, batch_size=8, seed=5)
    per_prompt = draw.per_prompt()
    for point, n in zip(points, (2, 4)):
        picks = [
            (i, max(texts[g * n : (g + 1) * n], key=len))  # max keeps the first on ties, as argmax
            for i, texts in enumerate(per_prompt)
            for g in range(OPTIONS["num_samples"])
        ]
        rewards = Vowels().score([PROMPTS[i] for i, _ in picks], [t for _, t in picks])
        expected = clustered_mean(rewards, np.array([i for i, _ in picks]))
        assert point["best_of"] == n and point["num_samples"] == len(PROMPTS) * 2
        assert point["reward"] == pytest.approx(expected["mean"], rel=1e-12)
        assert point["reward_stderr"] == pytest.approx(expected["stderr"], rel=1e-12)
        assert point["kl"] == best_of_n_kl(n) and point["kl_stderr"] == 0.0
        assert point["kl_kind"] == "analytic_bound"
    assert any(len(set(texts)) > 1 for texts in per_prompt)  # there was a choice to make


def test_n_below_two_and_a_missing_selector_are_refused(policy):
    tokenizer = load_tokenizer("tiny")
    with pytest.raises(ValueError, match="N >= 2"):
        best_of_n_reward(policy, tokenizer, PROMPTS, Vowels(), Length(), (1, 4), **OPTIONS)
    assert best_of_n_reward(policy, tokenizer, PROMPTS, Vowels(), Length(), (), **OPTIONS) == []
    with pytest.raises(ValueError, match="need a selector"):
        frontier_points([], PROMPTS, Vowels(), best_of=(4,))
