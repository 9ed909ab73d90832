"""sequence_logps and the response-only projection from hidden states against a float64 NumPy evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.objectives.logps import (
    HiddenStates,
    next_token_targets,
    sequence_logps,
    sequence_logps_from_hidden,
    token_logps,
)

NUM_SEQUENCES, LENGTH, VOCAB = 3, 9, 13


def numpy_sequence_logps(logits, input_ids, loss_mask, average=False):
    """Float64 loop over positions: token t counts with log_softmax(logits[t - 1])[input_ids[t]]."""
    logits = np.asarray(logits, dtype=np.float64)
    log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    totals = np.zeros(logits.shape[0])
    counts = np.zeros(logits.shape[0])
    for n in range(logits.shape[0]):
        for t in range(1, logits.shape[1]):
            if loss_mask[n, t]:
                totals[n] += log_probs[n, t - 1, input_ids[n, t]]
                counts[n] += 1
    if average:
        totals = totals / np.maximum(counts, 1)
    return totals, counts


def random_inputs(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.standard_normal((NUM_SEQUENCES, LENGTH, VOCAB))).astype(dtype)
    input_ids = rng.integers(0, VOCAB, size=(NUM_SEQUENCES, LENGTH)).astype(np.int32)
    # Prompt of 2..3 tokens, then a response of varying length, then right padding.
    loss_mask = np.zeros((NUM_SEQUENCES, LENGTH), dtype=np.int32)
    loss_mask[0, 2:7] = 1
    loss_mask[1, 3:9] = 1
    loss_mask[2, 2:4] = 1
    return logits, input_ids, loss_mask


@pytest.mark.parametrize("average", [False, True])
def test_matches_numpy_float64(average):
    logits, input_ids, loss_mask = random_inputs(0)
    logps, num_tokens = sequence_logps(logits, input_ids, loss_mask, average=average)
    expected, expected_counts = numpy_sequence_logps(logits, input_ids, loss_mask, average=average)
    assert logps.dtype == jnp.float32 and num_tokens.dtype == jnp.float32
    np.testing.assert_allclose(logps, expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(num_tokens, expected_counts)


def test_bfloat16_logits_give_float32_accuracy():
    logits, input_ids, loss_mask = random_inputs(1)
    bf16_logits = jnp.asarray(logits, dtype=jnp.bfloat16)
    logps, _ = sequence_logps(bf16_logits, input_ids, loss_mask)
    # The oracle sees exactly the bf16 values, in float64: only the accumulation precision is tested.
    expected, _ = numpy_sequence_logps(np.asarray(bf16_logits.astype(jnp.float32)), input_ids, loss_mask)
    assert logps.dtype == jnp.float32
    np.testing.assert_allclose(logps, expected, rtol=1e-6, atol=1e-5)


def test_eos_counts_when_pad_equals_eos():
    eos = pad = 0
    logits, _, _ = random_inputs(2)
    # Prompt [5, 6], response [7, eos], then padding with the same id as eos.
    input_ids = np.array([[5, 6, 7, eos, pad, pad, pad, pad, pad]], dtype=np.int32)
    loss_mask = np.array([[0, 0, 1, 1, 0, 0, 0, 0, 0]], dtype=np.int32)
    logits = logits[:1]
    logps, num_tokens = sequence_logps(logits, input_ids, loss_mask)
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)), dtype=np.float64)
    with_eos = log_probs[0, 1, 7] + log_probs[0, 2, eos]
    np.testing.assert_allclose(logps, [with_eos], rtol=1e-6)
    assert float(num_tokens[0]) == 2.0


def test_position_zero_never_counts_and_empty_rows_are_zero():
    logits, input_ids, loss_mask = random_inputs(3)
    with_first = loss_mask.copy()
    with_first[:, 0] = 1
    np.testing.assert_array_equal(
        sequence_logps(logits, input_ids, with_first)[0], sequence_logps(logits, input_ids, loss_mask)[0]
    )
    empty = np.zeros_like(loss_mask)
    for average in (False, True):
        logps, num_tokens = sequence_logps(logits, input_ids, empty, average=average)
        np.testing.assert_array_equal(logps, 0.0)
        np.testing.assert_array_equal(num_tokens, 0.0)


def test_non_counted_positions_cannot_poison_the_result():
    logits, input_ids, loss_mask = random_inputs(4)
    poisoned = logits.copy()
    poisoned[:, -1, :] = -np.inf  # the last position predicts nothing
    poisoned[2, 6, :] = np.nan  # row 2's response ends at position 3
    np.testing.assert_array_equal(
        sequence_logps(poisoned, input_ids, loss_mask)[0], sequence_logps(logits, input_ids, loss_mask)[0]
    )


def test_gradient_matches_autodiff_of_log_softmax():
    logits, input_ids, loss_mask = random_inputs(5)
    weights = jnp.array([0.5, -1.0, 2.0])

    def objective(logits):
        return jnp.dot(weights, sequence_logps(logits, input_ids, loss_mask)[0])

    def oracle(logits):
        log_probs = jax.nn.log_softmax(logits[:, :-1], axis=-1)
        picked = jnp.take_along_axis(log_probs, input_ids[:, 1:, None], axis=-1)[..., 0]
        return jnp.dot(weights, jnp.sum(picked * loss_mask[:, 1:], axis=-1))

    np.testing.assert_allclose(
        jax.jit(jax.grad(objective))(logits), jax.jit(jax.grad(oracle))(logits), rtol=1e-5, atol=1e-6
    )


def test_backward_keeps_no_float32_copy_of_the_logits():
    logits, input_ids, loss_mask = random_inputs(6)
    bf16_logits = jnp.asarray(logits, dtype=jnp.bfloat16)
    _, backward = jax.vjp(lambda x: sequence_logps(x, input_ids, loss_mask)[0], bf16_logits)
    full_size_residuals = [
        leaf.dtype for leaf in jax.tree_util.tree_leaves(backward) if leaf.shape == bf16_logits.shape
    ]
    assert full_size_residuals == [jnp.bfloat16]


@pytest.mark.parametrize(("chunk_size", "average"), [(4, False), (3, True), (64, False)])
def test_from_hidden_equals_plain(chunk_size, average):
    rng = np.random.default_rng(7)
    hidden = rng.standard_normal((NUM_SEQUENCES, LENGTH, 6)).astype(np.float32)
    unembed = rng.standard_normal((6, VOCAB)).astype(np.float32)
    _, input_ids, loss_mask = random_inputs(7)

    def plain(hidden, unembed):
        return sequence_logps(hidden @ unembed, input_ids, loss_mask, average=average)

    def chunked(hidden, unembed):
        return sequence_logps_from_hidden(
            hidden, unembed, input_ids, loss_mask, average=average, chunk_size=chunk_size
        )

    for got, want in zip(chunked(hidden, unembed), plain(hidden, unembed)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    weights = jnp.array([1.0, -0.5, 0.25])
    got_grads = jax.jit(jax.grad(lambda h, u: jnp.dot(weights, chunked(h, u)[0]), argnums=(0, 1)))(
        hidden, unembed
    )
    want_grads = jax.jit(jax.grad(lambda h, u: jnp.dot(weights, plain(h, u)[0]), argnums=(0, 1)))(
        hidden, unembed
    )
    for got, want in zip(got_grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_from_hidden_backward_keeps_only_chunk_inputs():
    rng = np.random.default_rng(8)
    hidden = rng.standard_normal((NUM_SEQUENCES, LENGTH, 4)).astype(np.float32)
    unembed = rng.standard_normal((4, VOCAB)).astype(np.float32)
    _, input_ids, loss_mask = random_inputs(8)
    _, backward = jax.vjp(
        lambda h, u: sequence_logps_from_hidden(h, u, input_ids, loss_mask, chunk_size=3)[0], hidden, unembed
    )
    largest_residual = max(leaf.size for leaf in jax.tree_util.tree_leaves(backward))
    assert largest_residual < NUM_SEQUENCES * LENGTH * VOCAB


def hidden_inputs(seed, width=5):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((NUM_SEQUENCES, LENGTH, width)).astype(np.float32)
    unembed = rng.standard_normal((width, VOCAB)).astype(np.float32)
    _, input_ids, loss_mask = random_inputs(seed)
    return hidden, unembed, input_ids, loss_mask


def test_padded_vocabulary_entries_never_count():
    """A vocabulary padded to a multiple of 128: masked entries get -inf logits, as the model's head gives."""
    hidden, unembed, input_ids, loss_mask = hidden_inputs(11)
    vocab_mask = np.arange(VOCAB) < VOCAB - 3  # the last three entries are padding
    input_ids = input_ids % (VOCAB - 3)
    masked_logits = jnp.where(vocab_mask, hidden @ unembed, -jnp.inf)
    want = sequence_logps(masked_logits, input_ids, loss_mask)[0]
    got = sequence_logps_from_hidden(
        hidden, unembed, input_ids, loss_mask, chunk_size=4, vocab_mask=vocab_mask
    )[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(got, sequence_logps(hidden @ unembed, input_ids, loss_mask)[0])


def test_only_counted_positions_are_projected():
    """NaN hidden states everywhere but the counted positions: with every row's counted positions
    fitting the first chunk, no other chunk may be projected, in the forward or the backward pass."""
    hidden, unembed, input_ids, _ = hidden_inputs(12)
    loss_mask = np.zeros((NUM_SEQUENCES, LENGTH), np.int32)
    for row, start in enumerate((2, 4, 5)):
        loss_mask[row, start : start + 3] = 1  # 3 counted targets per row after the shift
    targets, counted = next_token_targets(input_ids, loss_mask)
    poisoned = np.where(np.asarray(counted)[..., None], hidden, np.nan)

    def total(hidden, unembed):
        return jnp.sum(token_logps(HiddenStates(hidden, unembed), targets, counted, chunk_size=3))

    value, grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(poisoned, unembed)
    want_value, want_grads = jax.value_and_grad(total, argnums=(0, 1))(hidden, unembed)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for got, want in zip(grads, want_grads):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    plain = jnp.where(counted, token_logps(hidden @ unembed, targets, counted), 0.0)
    np.testing.assert_allclose(token_logps(HiddenStates(hidden, unembed), targets, counted), plain, atol=1e-6)
