"""Each preference loss and its metrics against an independent float64 NumPy evaluation of its formula."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.objectives.losses import (
    LOSS_NAMES,
    dpo_loss,
    plackett_luce_loss,
    preference_loss,
    validate_loss_options,
)
from tests.tolerances import assert_f32_close

BATCH = 6
BETA = 0.3


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def numpy_pairwise_loss(name, logratios, beta, label_smoothing=0.0):
    margin = logratios[:, 0] - logratios[:, 1]
    u = beta * margin
    eps = label_smoothing
    if name == "dpo":
        return -(1 - eps) * log_sigmoid(u) - eps * log_sigmoid(-u)
    if name == "ipo":
        return (margin - 1 / (2 * beta)) ** 2
    if name == "hinge":
        return np.maximum(0.0, 1 - u)
    if name == "robust":
        return ((1 - eps) * -log_sigmoid(u) - eps * -log_sigmoid(-u)) / (1 - 2 * eps)
    raise AssertionError(name)


def numpy_plackett_luce(logratios, beta, ranking=None, top_k=0):
    """-log P(ranking) with P = prod_k exp(s_tau(k)) / sum_{j>=k} exp(s_tau(j)); ranking is best first."""
    num_responses = logratios.shape[1]
    ranking = np.arange(num_responses) if ranking is None else ranking
    positions = num_responses if top_k == 0 else top_k
    losses = np.zeros(logratios.shape[0])
    for b in range(logratios.shape[0]):
        rewards = beta * logratios[b, ranking]
        for k in range(positions):
            losses[b] -= rewards[k] - np.logaddexp.reduce(rewards[k:])
    return losses


def random_logps(seed, num_responses=2):
    rng = np.random.default_rng(seed)
    policy = -rng.gamma(3.0, 4.0, size=(BATCH, num_responses))
    reference = -rng.gamma(3.0, 4.0, size=(BATCH, num_responses))
    return policy.astype(np.float32), reference.astype(np.float32)


def as_float64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def averages(metrics):
    return {name: float(total) / float(count) for name, (total, count) in metrics.items()}


PAIRWISE_CASES = [("dpo", 0.0), ("dpo", 0.1), ("ipo", 0.0), ("hinge", 0.0), ("robust", 0.0), ("robust", 0.2)]


@pytest.mark.parametrize(("name", "label_smoothing"), PAIRWISE_CASES)
def test_pairwise_loss_and_metrics_match_numpy(name, label_smoothing):
    policy, reference = random_logps(0)
    options = {"label_smoothing": label_smoothing} if label_smoothing else {}
    loss, metrics = preference_loss(name, policy, reference, beta=BETA, **options)
    policy64, reference64 = as_float64(policy, reference)
    logratios = policy64 - reference64
    expected_loss = numpy_pairwise_loss(name, logratios, BETA, label_smoothing)
    np.testing.assert_allclose(float(loss), expected_loss.mean(), rtol=1e-6)
    rewards = BETA * logratios
    expected_metrics = {
        "loss": expected_loss.mean(),
        "rewards/chosen": rewards[:, 0].mean(),
        "rewards/rejected": rewards[:, 1].mean(),
        "rewards/margins": (rewards[:, 0] - rewards[:, 1]).mean(),
        "rewards/accuracies": (rewards[:, 0] > rewards[:, 1]).mean(),
        "logps/chosen": policy64[:, 0].mean(),
        "logps/rejected": policy64[:, 1].mean(),
    }
    got = averages(metrics)
    assert got.keys() == expected_metrics.keys()
    for metric_name, expected in expected_metrics.items():
        np.testing.assert_allclose(got[metric_name], expected, rtol=1e-6, atol=1e-6, err_msg=metric_name)
    assert all(float(count) == BATCH for _, count in metrics.values())


def test_loss_sum_is_differentiable_and_equals_mean_times_count():
    policy, reference = random_logps(1)
    example_mask = np.array([1, 1, 0, 1, 0, 1])

    def loss_sum(policy):
        return preference_loss("dpo", policy, reference, beta=BETA, example_mask=example_mask)[1]["loss"][0]

    def mean_loss(policy):
        return preference_loss("dpo", policy, reference, beta=BETA, example_mask=example_mask)[0]

    np.testing.assert_allclose(loss_sum(policy), mean_loss(policy) * 4, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(loss_sum)(policy), 4 * jax.grad(mean_loss)(policy), rtol=1e-6)
    assert not np.any(jax.grad(loss_sum)(policy)[example_mask == 0])


@pytest.mark.parametrize("name", ["dpo", "ipo", "plackett_luce", "sft"])
def test_example_mask_excludes_rows(name):
    policy, reference = random_logps(2)
    example_mask = np.array([1, 0, 1, 1, 0, 0])
    garbage_policy = policy.copy()
    garbage_policy[example_mask == 0] = np.nan
    loss, metrics = preference_loss(name, garbage_policy, reference, beta=BETA, example_mask=example_mask)
    real = example_mask == 1
    real_loss, real_metrics = preference_loss(name, policy[real], reference[real], beta=BETA)
    np.testing.assert_allclose(loss, real_loss, rtol=1e-6)
    assert metrics.keys() == real_metrics.keys()
    for metric_name, (total, count) in metrics.items():
        np.testing.assert_allclose(total, real_metrics[metric_name][0], rtol=1e-6, err_msg=metric_name)
        assert float(count) == 3.0


def test_all_padding_batch_gives_zero_loss_and_zero_counts():
    policy, reference = random_logps(3)
    loss, metrics = preference_loss("dpo", policy, reference, beta=BETA, example_mask=np.zeros(BATCH))
    assert float(loss) == 0.0
    assert all(float(total) == 0.0 and float(count) == 0.0 for total, count in metrics.values())


@pytest.mark.parametrize("name", ["dpo", "hinge", "plackett_luce"])
def test_reference_free_treats_reference_as_zero(name):
    policy, reference = random_logps(4)
    loss, metrics = preference_loss(name, policy, None, beta=BETA, reference_free=True)
    ignored_reference_loss, _ = preference_loss(name, policy, reference, beta=BETA, reference_free=True)
    zero_reference_loss, zero_metrics = preference_loss(name, policy, np.zeros_like(policy), beta=BETA)
    np.testing.assert_allclose(loss, zero_reference_loss, rtol=1e-6)
    np.testing.assert_allclose(ignored_reference_loss, zero_reference_loss, rtol=1e-6)
    np.testing.assert_allclose(averages(metrics)["rewards/chosen"], BETA * np.mean(policy[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(averages(metrics)["rewards/chosen"], averages(zero_metrics)["rewards/chosen"])


def test_label_smoothing_changes_dpo_by_exactly_the_flipped_term():
    policy, reference = random_logps(5)
    eps = 0.15
    scores = jnp.asarray(policy - reference)
    smoothed = dpo_loss(scores, beta=BETA, label_smoothing=eps)
    plain = dpo_loss(scores, beta=BETA)
    (scores64,) = as_float64(scores)
    u = BETA * (scores64[:, 0] - scores64[:, 1])
    np.testing.assert_allclose(
        smoothed - plain, eps * (log_sigmoid(u) - log_sigmoid(-u)), rtol=1e-5, atol=1e-6
    )


def test_sft_is_negative_log_likelihood_of_the_best_response():
    policy, _ = random_logps(6, num_responses=1)
    loss, metrics = preference_loss("sft", policy, None, beta=BETA)
    np.testing.assert_allclose(loss, -np.mean(policy[:, 0], dtype=np.float64), rtol=1e-6)
    assert sorted(metrics) == ["logps/chosen", "loss"]
    two_responses, reference = random_logps(6, num_responses=2)
    loss_with_rejected, _ = preference_loss("sft", two_responses, reference, beta=BETA)
    np.testing.assert_allclose(loss_with_rejected, -np.mean(two_responses[:, 0], dtype=np.float64), rtol=1e-6)


@pytest.mark.parametrize(("num_responses", "top_k"), [(3, 0), (4, 0), (4, 1), (4, 2), (4, 3), (4, 4)])
def test_plackett_luce_matches_numpy(num_responses, top_k):
    policy, reference = random_logps(7, num_responses)
    loss, _ = preference_loss("plackett_luce", policy, reference, beta=BETA, top_k=top_k)
    (logratios,) = as_float64(policy - reference)
    np.testing.assert_allclose(
        float(loss), numpy_plackett_luce(logratios, BETA, top_k=top_k).mean(), rtol=1e-6
    )


@pytest.mark.parametrize("top_k", [0, 1, 2])
def test_plackett_luce_with_two_responses_is_dpo(top_k):
    policy, reference = random_logps(8)
    pl_loss, pl_metrics = preference_loss("plackett_luce", policy, reference, beta=BETA, top_k=top_k)
    dpo, dpo_metrics = preference_loss("dpo", policy, reference, beta=BETA)
    # Two formulas (softplus of a one-term logsumexp, log-sigmoid) of the same log-ratios: equal up to
    # the roundings of the difference, the scaling, the transcendental and a sum over BATCH examples.
    bound = {"terms": BATCH + 4, "magnitude": BATCH * BETA * (np.abs(policy) + np.abs(reference)).max()}
    assert_f32_close(pl_loss, dpo, **bound)
    scores = jnp.asarray(policy - reference)
    assert_f32_close(plackett_luce_loss(scores, beta=BETA), dpo_loss(scores, beta=BETA), **bound)
    for metric_name, (total, _) in dpo_metrics.items():
        assert_f32_close(pl_metrics[metric_name][0], total, **bound, err_msg=metric_name)


def test_plackett_luce_permuting_responses_with_the_ranking_keeps_the_loss():
    rng = np.random.default_rng(9)
    policy, reference = random_logps(9, num_responses=4)
    (logratios,) = as_float64(policy - reference)
    canonical = numpy_plackett_luce(logratios, BETA)
    loss, _ = preference_loss("plackett_luce", policy, reference, beta=BETA)
    for _ in range(3):
        stored_order = rng.permutation(4)  # responses stored shuffled ...
        ranking = np.argsort(stored_order)  # ... and the ranking that points back at them
        permuted = logratios[:, stored_order]
        np.testing.assert_allclose(
            numpy_plackett_luce(permuted, BETA, ranking=ranking), canonical, rtol=1e-12
        )
        reordered = (policy[:, stored_order][:, ranking], reference[:, stored_order][:, ranking])
        # Same values in another order: the K-term logsumexps and the BATCH-term mean round differently.
        assert_f32_close(
            preference_loss("plackett_luce", *reordered, beta=BETA)[0],
            loss,
            terms=BATCH + 4 * 4,
            magnitude=BATCH * BETA * (np.abs(policy) + np.abs(reference)).max(),
        )


def test_plackett_luce_gradient_is_finite_and_matches_numerical_difference():
    policy, reference = random_logps(10, num_responses=3)

    def loss(policy):
        return preference_loss("plackett_luce", policy, reference, beta=BETA, top_k=2)[0]

    grad = np.asarray(jax.grad(loss)(policy), dtype=np.float64)
    assert np.all(np.isfinite(grad))
    (policy64, reference64) = as_float64(policy, reference)
    step = 1e-4
    for b, k in itertools.product(range(2), range(3)):
        shifted = [policy64.copy(), policy64.copy()]
        shifted[0][b, k] += step
        shifted[1][b, k] -= step
        up, down = (numpy_plackett_luce(p - reference64, BETA, top_k=2).mean() for p in shifted)
        np.testing.assert_allclose(grad[b, k], (up - down) / (2 * step), rtol=1e-3, atol=1e-6)


def test_metrics_for_more_than_two_responses_compare_best_with_mean_of_others():
    policy, reference = random_logps(11, num_responses=3)
    _, metrics = preference_loss("plackett_luce", policy, reference, beta=BETA)
    policy64, reference64 = as_float64(policy, reference)
    rewards = BETA * (policy64 - reference64)
    got = averages(metrics)
    np.testing.assert_allclose(got["rewards/rejected"], rewards[:, 1:].mean(), rtol=1e-6)
    np.testing.assert_allclose(
        got["rewards/margins"], (rewards[:, 0] - rewards[:, 1:].mean(1)).mean(), rtol=1e-5
    )
    np.testing.assert_allclose(got["logps/rejected"], policy64[:, 1:].mean(), rtol=1e-6)
    best_is_first = np.all(rewards[:, :1] > rewards[:, 1:], axis=1)
    np.testing.assert_allclose(got["rewards/accuracies"], best_is_first.mean())


def test_accuracy_is_strict():
    policy = np.array([[-1.0, -1.0], [-1.0, -2.0]], dtype=np.float32)
    _, metrics = preference_loss("dpo", policy, np.zeros_like(policy), beta=BETA)
    assert averages(metrics)["rewards/accuracies"] == 0.5


def test_pairwise_losses_reject_more_than_two_responses_and_missing_reference():
    policy, reference = random_logps(12, num_responses=3)
    for name in ("dpo", "ipo", "hinge", "robust"):
        with pytest.raises(ValueError, match="num_responses=3"):
            preference_loss(name, policy, reference, beta=BETA)
    with pytest.raises(ValueError, match="reference"):
        preference_loss("dpo", policy[:, :2], None, beta=BETA)


@pytest.mark.parametrize(
    ("name", "options", "field"),
    [
        ("dpx", {}, "loss_name='dpx'"),
        ("dpo", {"beta": 0.0}, "beta=0.0"),
        ("dpo", {"beta": -0.1}, "beta=-0.1"),
        ("dpo", {"beta": float("nan")}, "beta=nan"),
        ("dpo", {"label_smoothing": 0.5}, "label_smoothing=0.5"),
        ("dpo", {"label_smoothing": -0.1}, "label_smoothing=-0.1"),
        ("ipo", {"label_smoothing": 0.1}, "label_smoothing=0.1"),
        ("hinge", {"label_smoothing": 0.1}, "label_smoothing=0.1"),
        ("plackett_luce", {"label_smoothing": 0.1}, "label_smoothing=0.1"),
        ("sft", {"label_smoothing": 0.1}, "label_smoothing=0.1"),
        ("dpo", {"num_responses": 3}, "num_responses=3"),
        ("robust", {"num_responses": 1}, "num_responses=1"),
        ("plackett_luce", {"num_responses": 1}, "num_responses=1"),
        ("sft", {"num_responses": 0}, "num_responses=0"),
        ("plackett_luce", {"num_responses": 4, "top_k": 5}, "top_k=5"),
        ("plackett_luce", {"top_k": -1}, "top_k=-1"),
        ("dpo", {"top_k": 1}, "top_k=1"),
        ("dpo", {"reference_free": 1}, "reference_free=1"),
        ("dpo", {"length_normalize": "yes"}, "length_normalize='yes'"),
    ],
)
def test_validate_loss_options_names_the_bad_field(name, options, field):
    options = {"beta": BETA, **options}
    with pytest.raises(ValueError) as error:
        validate_loss_options(name, **options)
    assert field in str(error.value)


def test_validate_loss_options_accepts_every_loss_with_defaults_and_lists_names_when_unknown():
    for name in LOSS_NAMES:
        validate_loss_options(name, beta=BETA)
    validate_loss_options("plackett_luce", beta=BETA, num_responses=5, top_k=3)
    validate_loss_options(
        "robust", beta=BETA, label_smoothing=0.49, reference_free=True, length_normalize=True
    )
    validate_loss_options("sft", beta=BETA, num_responses=1)
    with pytest.raises(ValueError) as error:
        validate_loss_options("simpo", beta=BETA)
    assert all(name in str(error.value) for name in LOSS_NAMES)


def test_margins_within_float32_rounding_are_ties_not_wins():
    # Equal models whose log-probs were summed in two orders (as two XLA programs may): same values up
    # to float32 rounding. A strict `>` would count about half of those rows as wins.
    rng = np.random.default_rng(0)
    wins_if_strict = 0
    for _ in range(8):
        token_logps = -rng.exponential(3.0, size=(16, 2, 200)).astype(np.float32)
        forward = np.zeros((16, 2), np.float32)
        backward = np.zeros((16, 2), np.float32)
        for t in range(200):
            forward += token_logps[..., t]
            backward += token_logps[..., 199 - t]
        scores = forward - backward
        wins_if_strict += int(np.sum(scores[:, 0] > scores[:, 1]))
        _, metrics = preference_loss("dpo", jnp.asarray(forward), jnp.asarray(backward), beta=0.1)
        assert float(metrics["rewards/accuracies"][0]) == 0.0
    assert wins_if_strict > 0  # the data does exercise rounding
    # A real margin, however small next to the log-probs, still wins.
    policy = jnp.asarray([[-300.0, -300.0]]) + jnp.asarray([[1e-2, 0.0]])
    _, metrics = preference_loss("dpo", policy, jnp.asarray([[-300.0, -300.0]]), beta=0.1)
    assert float(metrics["rewards/accuracies"][0]) == 1.0
