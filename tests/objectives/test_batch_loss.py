"""batch_loss on a tiny Flax causal LM: the DPO gradient identity, a frozen reference, one forward."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.data.packing import RowLayout
from dpo_jax.objectives.batch_loss import batch_layout, batch_loss, reference_logps
from dpo_jax.objectives.logps import sequence_logps
from dpo_jax.objectives.losses import preference_loss
from tests.tolerances import assert_f32_close
from tests.train_helpers import tiny_config

VOCAB, LENGTH, BETA = 11, 8, 0.5
EOS = PAD = 0  # pad == eos on purpose: the loss mask alone must decide what counts


class TinyCausalLM(nn.Module):
    """Embedding, a causal running-mean mixer and a dense head: enough for the identities under test."""

    vocab_size: int = VOCAB
    width: int = 6

    @nn.compact
    def __call__(self, input_ids, attention_mask):
        x = nn.Embed(self.vocab_size, self.width)(input_ids) * attention_mask[..., None]
        running_mean = jnp.cumsum(x, axis=1) / jnp.arange(1, x.shape[1] + 1)[None, :, None]
        hidden = jnp.tanh(nn.Dense(self.width)(jnp.concatenate([x, running_mean], axis=-1)))
        return nn.Dense(self.vocab_size)(hidden)


MODEL = TinyCausalLM()


def apply_fn(params, input_ids, attention_mask):
    return MODEL.apply(params, input_ids, attention_mask)


# One jitted init is much faster than Flax's op-by-op eager init on a small shared CPU.
_jitted_init = jax.jit(MODEL.init)


@functools.cache
def init_params(seed):
    return _jitted_init(
        jax.random.key(seed), jnp.zeros((1, LENGTH), jnp.int32), jnp.ones((1, LENGTH), jnp.int32)
    )


def make_batch(seed, num_prompts=3, num_responses=2, example_mask=None):
    """Right-padded prompt + response rows; each response ends with EOS, which counts."""
    rng = np.random.default_rng(seed)
    shape = (num_prompts, num_responses, LENGTH)
    input_ids = np.full(shape, PAD, dtype=np.int32)
    attention_mask = np.zeros(shape, dtype=np.int32)
    loss_mask = np.zeros(shape, dtype=np.int32)
    for b in range(num_prompts):
        prompt_length = int(rng.integers(1, 4))
        prompt = rng.integers(1, VOCAB, size=prompt_length)
        for k in range(num_responses):
            response_length = int(rng.integers(1, LENGTH - prompt_length + 1))
            response = np.append(rng.integers(1, VOCAB, size=response_length - 1), EOS)
            end = prompt_length + response_length
            input_ids[b, k, :end] = np.concatenate([prompt, response])
            attention_mask[b, k, :end] = 1
            loss_mask[b, k, prompt_length:end] = 1
    if example_mask is None:
        example_mask = np.ones(num_prompts)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "example_mask": np.asarray(example_mask, dtype=np.int32),
    }


@functools.partial(jax.jit, static_argnames="average")
def response_logps(params, batch, average=False):
    """[B, K] log-probs computed response by response: an oracle independent of batch_loss's reshaping."""
    num_prompts, num_responses, _ = batch["input_ids"].shape
    columns = []
    for k in range(num_responses):
        logits = apply_fn(params, batch["input_ids"][:, k], batch["attention_mask"][:, k])
        columns.append(
            sequence_logps(logits, batch["input_ids"][:, k], batch["loss_mask"][:, k], average=average)[0]
        )
    return jnp.stack(columns, axis=1)


def assert_trees_close(got, want, **tolerances):
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, **tolerances), got, want)


def test_dpo_gradient_matches_the_papers_formula():
    params, reference_params = init_params(0), init_params(1)
    batch = make_batch(2, num_prompts=4, example_mask=[1, 1, 0, 1])
    real = batch["example_mask"] == 1

    def mean_loss(params):
        loss_sum, metrics = batch_loss(
            params, reference_params, batch, apply_fn=apply_fn, loss_name="dpo", beta=BETA
        )
        return loss_sum / metrics["loss"][1]

    grads = jax.jit(jax.grad(mean_loss))(params)

    # grad L = -beta * mean_b[ sigmoid(r_l - r_w) * (grad log pi(y_w) - grad log pi(y_l)) ]
    logps_and_jacobian = jax.jit(
        lambda params: (response_logps(params, batch), jax.jacrev(response_logps)(params, batch))
    )
    policy_logps, per_response_grads = logps_and_jacobian(params)  # jacobian leaves: [B, K, *param_shape]
    rewards = BETA * np.asarray(policy_logps - response_logps(reference_params, batch), dtype=np.float64)
    weights = 1.0 / (1.0 + np.exp(rewards[:, 0] - rewards[:, 1]))  # sigmoid(r_l - r_w)

    def oracle(leaf_grads):
        difference = np.asarray(leaf_grads[:, 0], np.float64) - np.asarray(leaf_grads[:, 1], np.float64)
        weighted = weights.reshape(-1, *[1] * (difference.ndim - 1)) * difference
        return -BETA * np.mean(weighted[real], axis=0)

    assert_trees_close(grads, jax.tree_util.tree_map(oracle, per_response_grads), rtol=1e-5, atol=1e-5)


def test_reference_params_get_exactly_zero_gradient():
    params, reference_params = init_params(0), init_params(1)
    batch = make_batch(3)
    grad_fn = jax.jit(
        jax.grad(
            functools.partial(batch_loss, apply_fn=apply_fn, loss_name="dpo", beta=BETA),
            argnums=(0, 1),
            has_aux=True,
        )
    )
    policy_grads, reference_grads = grad_fn(params, reference_params, batch)[0]
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(reference_grads))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(policy_grads))


@pytest.mark.parametrize(("loss_name", "options"), [("dpo", {"label_smoothing": 0.1}), ("ipo", {})])
def test_precomputed_reference_logps_equal_the_reference_forward(loss_name, options):
    params, reference_params = init_params(0), init_params(1)
    batch = make_batch(4, example_mask=[1, 0, 1])
    loss = jax.jit(
        jax.value_and_grad(
            functools.partial(
                batch_loss,
                apply_fn=apply_fn,
                loss_name=loss_name,
                beta=BETA,
                length_normalize=True,
                **options,
            ),
            has_aux=True,
        )
    )
    (loss_sum, metrics), grads = loss(params, reference_params, batch)
    precomputed = dict(batch)
    precomputed["reference_logps"] = np.asarray(
        reference_logps(reference_params, batch, apply_fn=apply_fn, length_normalize=True)
    )
    (cached_loss_sum, cached_metrics), cached_grads = loss(params, None, precomputed)
    # The cached and the in-step reference log-probs are one computation in two XLA programs (fused
    # differently): each is a mean over <= LENGTH tokens of a log-softmax over VOCAB logits, so they may
    # differ by f32_bound(|log-probs|, VOCAB + LENGTH). The loss, metrics and gradients are sums over the
    # real examples of functions of them whose slope is below 1 + 1/beta (IPO's (h - 1/(2 beta))^2 at
    # |h| <= |log-probs|), plus their own roundings: so the bound is taken at the summed magnitude.
    magnitude = (1 + 1 / BETA) * np.abs(precomputed["reference_logps"]).sum()
    terms = VOCAB + LENGTH
    assert_f32_close(cached_loss_sum, loss_sum, terms=terms, magnitude=magnitude)
    assert_f32_close(cached_metrics, metrics, terms=terms, magnitude=magnitude)
    assert_f32_close(cached_grads, grads, terms=terms, magnitude=magnitude)


def test_matches_preference_loss_on_independently_computed_logps():
    params, reference_params = init_params(0), init_params(1)
    batch = make_batch(5, example_mask=[1, 1, 0])
    loss_sum, metrics = batch_loss(
        params, reference_params, batch, apply_fn=apply_fn, loss_name="ipo", beta=BETA, length_normalize=True
    )
    _, expected = preference_loss(
        "ipo",
        response_logps(params, batch, average=True),
        response_logps(reference_params, batch, average=True),
        beta=BETA,
        example_mask=batch["example_mask"],
    )
    assert_trees_close(metrics, expected, rtol=1e-5, atol=1e-6)
    assert float(loss_sum) == float(metrics["loss"][0])


def test_all_responses_share_one_forward_and_sft_runs_no_reference():
    params = init_params(0)
    batch = make_batch(6, num_prompts=3, num_responses=2)
    forward_shapes = []

    def counting_apply_fn(params, input_ids, attention_mask):
        forward_shapes.append(input_ids.shape)
        return apply_fn(params, input_ids, attention_mask)

    batch_loss(params, init_params(1), batch, apply_fn=counting_apply_fn, loss_name="dpo", beta=BETA)
    assert forward_shapes == [(6, LENGTH), (6, LENGTH)]  # policy, reference

    forward_shapes.clear()
    sft_batch = make_batch(6, num_prompts=3, num_responses=1, example_mask=[1, 0, 1])
    loss_sum, metrics = batch_loss(
        params, None, sft_batch, apply_fn=counting_apply_fn, loss_name="sft", beta=BETA
    )
    assert forward_shapes == [(3, LENGTH)]
    expected = -np.asarray(response_logps(params, sft_batch))[[0, 2], 0].sum()
    np.testing.assert_allclose(loss_sum, expected, rtol=1e-6)
    assert float(metrics["loss"][1]) == 2.0


def test_missing_reference_is_an_error():
    with pytest.raises(ValueError, match="reference"):
        batch_loss(init_params(0), None, make_batch(7), apply_fn=apply_fn, loss_name="dpo", beta=BETA)


def test_the_policy_stages_share_the_prompt_by_default_and_the_reward_model_stays_padded():
    for stage, loss in (("dpo", "dpo"), ("sft", "sft")):
        assert batch_layout(tiny_config("hh", "tiny", stage=stage, loss=loss), row_multiple=8) == RowLayout(
            share_prompt=True, pack=False, row_multiple=8
        )
    reward = tiny_config("hh", "tiny", stage="reward_model", loss="bradley_terry")
    assert reward.data.share_prompt and batch_layout(reward, row_multiple=8) is None
    padded = tiny_config("hh", "tiny", **{"data.share_prompt": False})
    assert batch_layout(padded, row_multiple=8) is None
