"""The unlikelihood baseline: batch_loss against a float64 NumPy evaluation, its gradient, the clip,
no reference forward, its weight alpha (golden value, alpha = 0 is preferred-FT, from the config), and
option validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.objectives import (
    LOSS_NAMES,
    UNLIKELIHOOD_MIN_COMPLEMENT,
    batch_loss,
    preference_loss,
    token_unlikelihood,
    uses_reference,
    validate_loss_options,
)

VOCAB, LENGTH = 5, 7
PAD = 0  # also the EOS every response ends with: only the loss mask decides what counts


def bigram_apply_fn(params, input_ids, attention_mask):
    """A causal LM simple enough to evaluate by hand: logits[n, t] = table[input_ids[n, t]]."""
    del attention_mask
    return params["table"][input_ids]


def make_batch(seed, num_prompts=3, example_mask=None):
    rng = np.random.default_rng(seed)
    shape = (num_prompts, 2, LENGTH)
    input_ids = np.full(shape, PAD, np.int32)
    attention_mask = np.zeros(shape, np.int32)
    loss_mask = np.zeros(shape, np.int32)
    for b in range(num_prompts):
        prompt = rng.integers(1, VOCAB, int(rng.integers(1, 3)))
        for k in range(2):
            response = np.append(rng.integers(1, VOCAB, int(rng.integers(0, LENGTH - len(prompt)))), PAD)
            end = len(prompt) + len(response)
            input_ids[b, k, :end] = np.concatenate([prompt, response])
            attention_mask[b, k, :end] = 1
            loss_mask[b, k, len(prompt) : end] = 1
    example_mask = np.ones(num_prompts, np.int32) if example_mask is None else np.asarray(example_mask)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "example_mask": example_mask.astype(np.int32),
    }


def numpy_unlikelihood_loss(table, batch, average, alpha=1.0):
    """(mean loss over real rows, mean chosen logp, mean rejected logp), all in float64."""
    table = np.asarray(table, np.float64)
    log_probs = table - np.log(np.exp(table).sum(-1, keepdims=True))
    ids, counted = batch["input_ids"], batch["loss_mask"][..., 1:].astype(bool)
    token_logps = log_probs[ids[..., :-1], ids[..., 1:]]  # token t+1 given token t
    num_tokens = counted.sum(-1) if average else np.ones(counted.shape[:-1])
    logps = np.where(counted, token_logps, 0.0).sum(-1) / num_tokens
    complement = np.maximum(1.0 - np.exp(token_logps), UNLIKELIHOOD_MIN_COMPLEMENT)
    unlikelihood = np.where(counted, -np.log(complement), 0.0).sum(-1) / num_tokens
    real = batch["example_mask"] == 1
    losses = -logps[:, 0] + alpha * unlikelihood[:, 1]
    return losses[real].mean(), logps[real, 0].mean(), logps[real, 1].mean()


def random_table(seed, scale=1.5):
    return np.random.default_rng(seed).normal(0.0, scale, (VOCAB, VOCAB)).astype(np.float32)


def mean_loss(table, batch, average, alpha=1.0, loss_name="unlikelihood"):
    options = {"unlikelihood_alpha": alpha} if loss_name == "unlikelihood" else {}
    loss_sum, metrics = batch_loss(
        {"table": table},
        None,
        batch,
        apply_fn=bigram_apply_fn,
        loss_name=loss_name,
        beta=0.1,
        length_normalize=average,
        **options,
    )
    return loss_sum / metrics["loss"][1], metrics


@pytest.mark.parametrize("average,alpha", [(False, 1.0), (True, 1.0), (False, 0.3)])
def test_batch_loss_matches_numpy(average, alpha):
    table = random_table(0)
    batch = make_batch(1, num_prompts=4, example_mask=[1, 0, 1, 1])
    loss, metrics = jax.jit(mean_loss, static_argnums=(2, 3))(table, batch, average, alpha)
    want_loss, want_chosen, want_rejected = numpy_unlikelihood_loss(table, batch, average, alpha)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    averages = {name: float(total / count) for name, (total, count) in metrics.items()}
    assert sorted(averages) == ["logps/chosen", "logps/rejected", "loss"]
    np.testing.assert_allclose(averages["logps/chosen"], want_chosen, rtol=1e-5)
    np.testing.assert_allclose(averages["logps/rejected"], want_rejected, rtol=1e-5)
    assert float(metrics["loss"][1]) == 3.0


def test_gradient_matches_numpy_finite_differences():
    table = random_table(2)
    batch = make_batch(3)
    grad = np.asarray(jax.jit(jax.grad(lambda t: mean_loss(t, batch, False)[0]))(table), np.float64)
    step, numeric = 1e-5, np.zeros((VOCAB, VOCAB))
    for index in np.ndindex(VOCAB, VOCAB):
        shift = np.zeros((VOCAB, VOCAB))
        shift[index] = step
        plus = numpy_unlikelihood_loss(table + shift, batch, False)[0]
        minus = numpy_unlikelihood_loss(table - shift, batch, False)[0]
        numeric[index] = (plus - minus) / (2 * step)
    np.testing.assert_allclose(grad, numeric, atol=2e-4)


def test_a_near_certain_rejected_token_is_clipped_and_gets_no_gradient():
    logits = jnp.array([[[0.0, 30.0, 0.0], [0.0, 0.0, 0.0]]])  # p(token 1 | position 0) ~ 1 - 2e-13
    input_ids = jnp.array([[0, 1]])
    loss_mask = jnp.array([[0, 1]])
    value, grad = jax.value_and_grad(lambda x: token_unlikelihood(x, input_ids, loss_mask)[0])(logits)
    np.testing.assert_allclose(value, -np.log(UNLIKELIHOOD_MIN_COMPLEMENT), rtol=1e-6)
    assert np.all(np.asarray(grad) == 0)


def test_no_reference_forward_and_one_policy_forward():
    batch = make_batch(4)
    shapes = []

    def counting_apply_fn(params, input_ids, attention_mask):
        shapes.append(input_ids.shape)
        return bigram_apply_fn(params, input_ids, attention_mask)

    reference = {"table": random_table(5)}
    batch_loss(
        {"table": random_table(6)},
        reference,
        batch,
        apply_fn=counting_apply_fn,
        loss_name="unlikelihood",
        beta=0.1,
    )
    assert shapes == [(6, LENGTH)]
    assert not uses_reference("unlikelihood")


def test_alpha_weighs_the_rejected_term_by_the_formula():
    """-log pi(y_w|x) + alpha * U(y_l), U = -sum_t log(1 - p(y_l,t)): golden values by hand."""
    policy_logps = jnp.array([[-2.0, -3.0], [-0.5, -1.5]])
    rejected_unlikelihood = jnp.array([0.75, 2.5])
    for alpha, want in ((1.0, (2.75 + 3.0) / 2), (0.25, (2.1875 + 1.125) / 2), (0.0, (2.0 + 0.5) / 2)):
        loss, _ = preference_loss(
            "unlikelihood",
            policy_logps,
            None,
            beta=0.1,
            rejected_unlikelihood=rejected_unlikelihood,
            unlikelihood_alpha=alpha,
        )
        np.testing.assert_allclose(loss, want, rtol=float(jnp.finfo(jnp.float32).eps), err_msg=f"alpha={alpha}")


def test_alpha_zero_is_preferred_ft_on_the_chosen_response():
    """alpha = 0 leaves -log pi(y_w|x): the loss and gradient of sft on the chosen responses alone."""
    table = random_table(7)
    batch = make_batch(8, num_prompts=3, example_mask=[1, 1, 0])
    chosen = {name: value[:, :1] if value.ndim == 3 else value for name, value in batch.items()}

    def value_and_grad(batch, **options):
        return jax.value_and_grad(lambda t: mean_loss(t, batch, False, **options)[0])(table)

    loss, grad = value_and_grad(batch, alpha=0.0)
    want_loss, want_grad = value_and_grad(chosen, loss_name="sft")
    # Same tokens, same sums: only the rejected rows' extra (zero-weighted) terms are in the graph.
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)
    assert float(value_and_grad(batch, alpha=1.0)[0]) > float(loss)  # the rejected term counts again


def test_alpha_comes_from_the_config_and_is_checked():
    from dpo_jax.objectives.batch_loss import loss_options
    from dpo_jax.training.checks import validate_config
    from tests.train_helpers import tiny_config

    config = tiny_config("hh", "tiny", loss="unlikelihood", unlikelihood_alpha=0.5)
    validate_config(config)
    assert loss_options(config)["unlikelihood_alpha"] == 0.5
    assert "unlikelihood_alpha" not in loss_options(tiny_config("hh", "tiny"))
    with pytest.raises(ValueError, match="unlikelihood_alpha=0.5 is ignored by loss 'dpo'"):
        validate_config(tiny_config("hh", "tiny", unlikelihood_alpha=0.5))


def test_options_are_validated():
    assert "unlikelihood" in LOSS_NAMES
    validate_loss_options("unlikelihood", beta=0.1)
    for options, field in (
        ({"num_responses": 3}, "num_responses=3"),
        ({"label_smoothing": 0.1}, "label_smoothing"),
        ({"beta": 0.0}, "beta"),
        ({"unlikelihood_alpha": -0.1}, "unlikelihood_alpha=-0.1 must be a finite number >= 0"),
        ({"unlikelihood_alpha": float("nan")}, "unlikelihood_alpha=nan"),
    ):
        with pytest.raises(ValueError, match=field):
            validate_loss_options("unlikelihood", **{"beta": 0.1, **options})
    logps = jnp.zeros((2, 2))
    call = functools.partial(preference_loss, policy_logps=logps, reference_logps=logps, beta=0.1)
    with pytest.raises(ValueError, match="needs rejected_unlikelihood"):
        call("unlikelihood")
    with pytest.raises(ValueError, match="does not take rejected_unlikelihood"):
        call("dpo", rejected_unlikelihood=jnp.zeros(2))
