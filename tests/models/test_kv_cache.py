"""Incremental decoding with the key/value cache reproduces the full forward, token by token."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.models import init_cache
from tests.models.conftest import VOCAB, hf_params, make_hf_model


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "gptj"])
@pytest.mark.parametrize("scan_layers", [False, True])
def test_prefill_then_step_by_step_equals_full_forward(arch, scan_layers):
    model, params = hf_params(make_hf_model(arch), scan_layers=scan_layers)
    rng = np.random.RandomState(0)
    batch, prompt_len, new_tokens = 3, 6, 5
    total = prompt_len + new_tokens
    ids = rng.randint(1, VOCAB, (batch, total)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :2] = 0  # left-padded prompts, as batched sampling produces
    mask[2, :4] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    full = np.asarray(model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))

    cache = init_cache(model, batch, total)
    apply = jax.jit(
        lambda cache, tok, m, pos: model.apply(
            {"params": params, "cache": cache}, tok, m, pos, decode=True, mutable=["cache"]
        )
    )
    # The cache-wide mask: slots not yet written are masked by causality, padding by the mask.
    logits, state = apply(
        cache, jnp.asarray(ids[:, :prompt_len]), jnp.asarray(mask), jnp.asarray(positions[:, :prompt_len])
    )
    steps = [np.asarray(logits)]
    cache = state["cache"]
    for t in range(prompt_len, total):
        logits, state = apply(
            cache, jnp.asarray(ids[:, t : t + 1]), jnp.asarray(mask), jnp.asarray(positions[:, t : t + 1])
        )
        cache = state["cache"]
        steps.append(np.asarray(logits))
    incremental = np.concatenate(steps, axis=1)
    real = mask.astype(bool)
    np.testing.assert_allclose(incremental[real], full[real], atol=1e-5, rtol=0)


def test_decode_without_positions_is_an_error():
    model, params = hf_params(make_hf_model("gpt2"))
    cache = init_cache(model, 1, 4)
    with pytest.raises(ValueError, match="position_ids"):
        model.apply(
            {"params": params, "cache": cache}, jnp.zeros((1, 1), jnp.int32), decode=True, mutable=["cache"]
        )
