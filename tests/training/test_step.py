"""make_apply_fn: the trainer's model call stops at the hidden states, and the batch loss it feeds equals
the loss computed from full logits, in values and gradients, for the policy and the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.models import ModelConfig, build_model, init_params
from dpo_jax.objectives import HiddenStates, batch_loss
from dpo_jax.training.step import make_apply_fn

VOCAB, LENGTH = 96, 12


@pytest.fixture(scope="module")
def setup():
    config = ModelConfig("gpt_neox", VOCAB, 32, 1, 2, 64, 64, tie_word_embeddings=False)
    model = build_model(config)
    params = init_params(model, jax.random.PRNGKey(0))
    reference = init_params(model, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    shape = (3, 2, LENGTH)
    attention_mask, loss_mask = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    for b, (prompt, ends) in enumerate([(3, (12, 7)), (5, (9, 12)), (2, (4, 10))]):
        for k, end in enumerate(ends):
            attention_mask[b, k, :end] = 1
            loss_mask[b, k, prompt:end] = 1
    batch = dict(
        input_ids=rng.integers(0, VOCAB, size=shape).astype(np.int32),
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        example_mask=np.ones((3,), np.int32),
    )
    return model, params, reference, batch


def test_apply_fn_returns_hidden_states_and_the_head_matrix(setup):
    model, params, _, batch = setup
    ids, mask = batch["input_ids"][:, 0], batch["attention_mask"][:, 0]
    outputs = make_apply_fn(model)(params, ids, mask)
    assert isinstance(outputs, HiddenStates) and outputs.unembed.shape == (32, VOCAB)
    logits = model.apply({"params": params}, ids, attention_mask=mask)
    np.testing.assert_allclose(outputs.hidden @ outputs.unembed, logits, atol=1e-5)


@pytest.mark.parametrize(
    ("loss_name", "options"), [("dpo", {}), ("unlikelihood", {"length_normalize": True})]
)
def test_hidden_state_loss_equals_the_full_logits_loss(setup, loss_name, options):
    model, params, reference, batch = setup

    def logits_fn(params, input_ids, attention_mask):
        return model.apply({"params": params}, input_ids, attention_mask=attention_mask)

    def loss(params, apply_fn):
        return batch_loss(
            params, reference, batch, apply_fn=apply_fn, loss_name=loss_name, beta=0.3, **options
        )

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (want, want_metrics), want_grads = grad(params, logits_fn)
    (got, got_metrics), got_grads = grad(params, make_apply_fn(model))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for name in want_metrics:
        np.testing.assert_allclose(got_metrics[name][0], want_metrics[name][0], rtol=1e-5, atol=1e-6)
    for got_leaf, want_leaf in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4, atol=1e-6)
    assert jnp.abs(jax.tree.leaves(got_grads)[0]).sum() > 0
