"""The controls of the synthetic recipe: the population DPO loss's minimiser is pi* (the paper's
Theorem 1, checked through the package's `dpo_loss` and the exact evaluation), a tabular policy on
many pairs gets close to it, and the departure analysis is zero for pi* itself."""

import pytest

from dpo_jax.synthetic import SyntheticTask, optimal_logprobs
from dpo_jax.synthetic.controls import (
    departure_by_reference_probability,
    evaluation_steps,
    population_dpo,
    tabular_dpo,
)

TASK = SyntheticTask(vocab_size=4, prompt_length=3, response_length=3, seed=0)


@pytest.fixture(scope="module")
def tables():
    prompts = TASK.sample_prompts(4, 0)
    return prompts, TASK.generator_logprobs(prompts), TASK.reward(prompts, TASK.all_completions())


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_the_population_loss_is_minimised_at_the_optimum(tables, beta):
    _, logp_ref, reward = tables
    result = population_dpo(logp_ref, reward, beta=beta)
    # The bar: the gain within 1e-3 of the optimum's (the minimiser stops at 1e-9 logit moves).
    assert abs(result["gain_ratio"] - 1.0) < 1e-3
    assert result["max_abs_log_ratio_to_optimum"] < 1e-6
    assert result["kl"] == pytest.approx(result["optimum_kl"], rel=1e-6)


def test_the_population_minimiser_follows_the_labels(tables):
    """Labels from -r: the minimiser is pi* of -r, not of r (the check above is not vacuous)."""
    _, logp_ref, reward = tables
    true, negated = population_dpo(logp_ref, reward, beta=1.0), population_dpo(logp_ref, -reward, beta=1.0)
    assert negated["gain_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert abs(negated["kl"] - true["kl"]) > 1e-3  # pi* of -r is another policy


def test_tabular_dpo_on_many_pairs_gets_close_to_the_optimum(tables):
    prompts, logp_ref, reward = tables
    chosen, rejected, rows = TASK.sample_pairs(prompts, logp_ref, 1, 20000)
    pairs = (rows, TASK.completion_index(chosen), TASK.completion_index(rejected))
    trajectory = tabular_dpo(logp_ref, reward, pairs, beta=1.0, learning_rate=1.0, num_steps=200, points=4)
    assert [p["step"] for p in trajectory] == evaluation_steps(200, 4)
    assert trajectory[-1]["loss"] < trajectory[0]["loss"]
    # 20,000 pairs per prompt over 64 completions: the finite-sample MLE is within a few percent.
    assert trajectory[-1]["gain_ratio"] > 0.9
    # Labels swapped: the same pairs teach the opposite preference, and the reward falls.
    swapped = tabular_dpo(
        logp_ref, reward, (rows, pairs[2], pairs[1]), beta=1.0, learning_rate=1.0, num_steps=50
    )
    assert swapped[-1]["gain_ratio"] < 0


def test_departure_of_the_optimum_from_itself_is_zero(tables):
    _, logp_ref, reward = tables
    bins = departure_by_reference_probability(optimal_logprobs(logp_ref, reward, 0.5), logp_ref, reward, 0.5)
    assert sum(b["cells"] for b in bins) == logp_ref.size
    # float64 sums of at most 64 terms per prompt: rounding far below 1e-9.
    assert sum(b["ref_mass"] for b in bins) == pytest.approx(1.0, abs=1e-9)
    for b in bins:
        if b["cells"]:
            assert abs(b["mean_departure"]) < 1e-9
            assert b["policy_kl_share"] == pytest.approx(b["optimum_kl_share"], abs=1e-9)


def test_evaluation_steps_end_at_the_last_step():
    assert evaluation_steps(1, 5) == [1]
    assert evaluation_steps(1000, 4)[-1] == 1000 and len(evaluation_steps(1000, 4)) == 4
    with pytest.raises(ValueError):
        evaluation_steps(0, 3)
