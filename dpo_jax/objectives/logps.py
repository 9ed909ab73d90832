"""Log-probabilities of response tokens under a causal language model, summed or averaged per sequence.

Convention shared by the whole project: `loss_mask[n, t] == 1` marks `input_ids[n, t]` as a response token
whose log-probability counts, and that token is predicted by `logits[n, t - 1]`. The shift happens here,
so position 0 never counts. Which tokens count is decided by the mask alone, never by comparing ids with
a pad id: with pad == eos that comparison silently drops the EOS token every response ends with.

Everything is accumulated in float32 whatever the logits' dtype, without keeping a float32 copy of the
`[N, L, V]` logits: the target logits are upcast after the gather, the rest inside the logsumexp
reduction, where XLA fuses it, and the backward pass saves nothing of size `[N, L, V]` beyond the logits
themselves.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_CHUNK_SIZE = 128


def next_token_targets(input_ids, loss_mask):
    """Targets and counting mask aligned with the logits position that predicts them.

    Shifting the small integer arrays left (and padding their last column, which predicts nothing)
    rather than slicing `logits[:, :-1]` keeps the large logits array untouched.
    """
    targets = jnp.pad(jnp.asarray(input_ids)[:, 1:], ((0, 0), (0, 1)))
    counted = jnp.pad(jnp.asarray(loss_mask)[:, 1:], ((0, 0), (0, 1))).astype(bool)
    return targets, counted


def _float32_logsumexp(logits):
    """logsumexp over the last axis, accumulated in float32, reading `logits` in their own dtype.

    The max is taken in the input dtype (exact in any float format), so the float32 upcast has a single
    consumer, the exp-sum reduction, into which it fuses.
    """
    row_max = jnp.max(logits, axis=-1, keepdims=True).astype(jnp.float32)
    # A row of -inf logits would otherwise give -inf - -inf = nan.
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    sum_exp = jnp.sum(jnp.exp(logits.astype(jnp.float32) - row_max), axis=-1)
    return jnp.log(sum_exp) + row_max[..., 0]


def _token_logps_forward(logits, targets):
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    log_normalisers = _float32_logsumexp(logits)
    return target_logits.astype(jnp.float32) - log_normalisers, (logits, targets, log_normalisers)


def _token_logps_backward(residuals, cotangent):
    logits, targets, log_normalisers = residuals
    probs = jnp.exp(logits.astype(jnp.float32) - log_normalisers[..., None])
    is_target = targets[..., None] == jnp.arange(logits.shape[-1])
    logits_grad = cotangent[..., None] * (is_target.astype(jnp.float32) - probs)
    return logits_grad.astype(logits.dtype), None


@jax.custom_vjp
def logits_token_logps(logits, targets):
    """log softmax(logits)[target] in float32 for every position: `[..., V]`, `[...]` -> `[...]`.

    A hand-written VJP keeps only the logits (alive anyway) and the `[...]` float32 normalisers for the
    backward pass, which rebuilds the softmax in one fused elementwise pass. Plain autodiff would save the
    float32 `exp` of every logit, a full float32 copy of the logits held from forward to backward.
    """
    return _token_logps_forward(logits, targets)[0]


logits_token_logps.defvjp(_token_logps_forward, _token_logps_backward)


def reduce_over_sequence(token_logps, counted, average):
    num_tokens = jnp.sum(counted, axis=-1, dtype=jnp.float32)
    # A select, not a product: positions that do not count may hold -inf (e.g. masked vocabulary entries).
    logps = jnp.sum(jnp.where(counted, token_logps, 0.0), axis=-1)
    if average:
        logps = logps / jnp.maximum(num_tokens, 1.0)
    return logps, num_tokens


def sequence_logps(logits, input_ids, loss_mask, *, average=False):
    """Per-sequence log-probability of the counted tokens.

    Args:
      logits: `[N, L, V]`, any float dtype.
      input_ids: `[N, L]` integer token ids.
      loss_mask: `[N, L]`, 1 where `input_ids[n, t]` counts (predicted by `logits[n, t - 1]`).
      average: return the mean over counted tokens instead of the sum (length-normalised variants).
        A sequence with no counted token gets 0.

    Returns:
      `(logps [N] float32, num_tokens [N] float32)`.
    """
    targets, counted = next_token_targets(input_ids, loss_mask)
    return reduce_over_sequence(logits_token_logps(logits, targets), counted, average)


class HiddenStates(NamedTuple):
    """A model's output before the vocabulary projection, for losses that project only what counts.

    hidden:     `[N, L, D]` final hidden states.
    unembed:    `[D, V]` output projection (the model's `output_embedding`), in the compute dtype.
    vocab_mask: optional `[V]` bool, False on vocabulary entries that are padding (never predicted):
                their logits are -inf, as the model's own head would make them.
    unembed_bias: optional `[V]` float32 added to the logits (a head with a bias: GPT-J's).
    """

    hidden: jax.Array
    unembed: jax.Array
    vocab_mask: jax.Array | None = None
    unembed_bias: jax.Array | None = None


def token_logps(outputs, targets, counted, *, chunk_size=DEFAULT_CHUNK_SIZE):
    """`[N, L]` float32 log-probs of `targets` (as `next_token_targets` aligns them).

    `outputs` is logits `[N, L, V]`, or `HiddenStates`: then only counted positions are projected onto
    the vocabulary (`counted_token_logps_from_hidden`) and the others hold 0.
    """
    if isinstance(outputs, HiddenStates):
        return counted_token_logps_from_hidden(
            outputs.hidden,
            outputs.unembed,
            targets,
            counted,
            vocab_mask=outputs.vocab_mask,
            unembed_bias=outputs.unembed_bias,
            chunk_size=chunk_size,
        )
    return logits_token_logps(outputs, targets)


def counted_token_logps_from_hidden(
    hidden, unembed, targets, counted, *, vocab_mask=None, unembed_bias=None, chunk_size=DEFAULT_CHUNK_SIZE
):
    """log softmax(hidden @ unembed)[target] at the counted positions, never holding `[N, L, V]` logits.

    Each row's counted positions are gathered to its front (a stable sort of the row, so the work
    stays on the device that holds the row), the gathered sequence is cut into chunks of `chunk_size`
    positions, and a chunk is projected only while some row still has counted positions in it: with
    DPO's right-padded pairs the prompt and the padding are never projected. Each chunk is
    rematerialised in the backward pass (`jax.checkpoint`), so autodiff keeps only its inputs. Logits
    are accumulated in float32 from `hidden` and `unembed` in their own (compute) dtype.

    Args:
      hidden: `[N, L, D]`; unembed: `[D, V]`.
      targets, counted: `[N, L]` from `next_token_targets`.
      vocab_mask: optional `[V]` bool, False on padded vocabulary entries.
      unembed_bias: optional `[V]`, added to the logits in float32.
      chunk_size: positions per chunk; the peak logits memory is `N * chunk_size * V` float32 values.

    Returns:
      `[N, L]` float32, 0 where not counted.
    """
    num_sequences, length, _ = hidden.shape
    chunk_size = max(1, min(chunk_size, length))
    num_chunks = -(-length // chunk_size)
    padding = num_chunks * chunk_size - length
    # Counted positions first in every row; a stable sort keeps them in order.
    order = jnp.argsort(jnp.logical_not(counted), axis=1, stable=True)
    gathered_hidden = jnp.take_along_axis(hidden, order[..., None], axis=1)
    gathered_targets = jnp.take_along_axis(targets, order, axis=1)
    # Padded positions get target 0 and lie past every row's counted ones, so they never count.
    gathered_hidden = jnp.pad(gathered_hidden, ((0, 0), (0, padding), (0, 0)))
    gathered_targets = jnp.pad(gathered_targets, ((0, 0), (0, padding)))
    most_counted = jnp.max(jnp.sum(counted, axis=1, dtype=jnp.int32))

    def to_chunks(array):
        chunked = array.reshape(num_sequences, num_chunks, chunk_size, *array.shape[2:])
        return jnp.moveaxis(chunked, 1, 0)

    @jax.checkpoint
    def project(hidden_chunk, target_chunk, head):
        unembed, bias = head
        logits = jnp.einsum("ncd,dv->ncv", hidden_chunk, unembed, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        if vocab_mask is not None:
            logits = jnp.where(vocab_mask, logits, -jnp.inf)
        return logits_token_logps(logits, target_chunk)

    def chunk_token_logps(head, chunk):
        index, hidden_chunk, target_chunk = chunk
        needed = index * chunk_size < most_counted
        skip = lambda *_: jnp.zeros(target_chunk.shape, jnp.float32)  # noqa: E731
        return head, jax.lax.cond(needed, project, skip, hidden_chunk, target_chunk, head)

    chunks = (jnp.arange(num_chunks), to_chunks(gathered_hidden), to_chunks(gathered_targets))
    _, gathered_logps = jax.lax.scan(chunk_token_logps, (unembed, unembed_bias), chunks)
    gathered_logps = jnp.moveaxis(gathered_logps, 0, 1).reshape(num_sequences, -1)[:, :length]
    # Back to the original positions; positions that do not count are zeroed, whatever was computed.
    logps = jnp.take_along_axis(gathered_logps, jnp.argsort(order, axis=1), axis=1)
    return jnp.where(counted, logps, 0.0)


def sequence_logps_from_hidden(
    hidden, unembed, input_ids, loss_mask, *, average=False, chunk_size=DEFAULT_CHUNK_SIZE, vocab_mask=None
):
    """`sequence_logps(hidden @ unembed, ...)` projecting only the counted positions, in chunks
    (`counted_token_logps_from_hidden`), so the full `[N, L, V]` logits never exist.

    Args:
      hidden: `[N, L, D]` final hidden states.
      unembed: `[D, V]` unembedding (output projection) matrix.
      input_ids, loss_mask, average: as in `sequence_logps`.
      chunk_size: positions per chunk; the peak logits memory is `N * chunk_size * V` float32 values.
      vocab_mask: optional `[V]` bool, False on padded vocabulary entries.

    Returns:
      `(logps [N] float32, num_tokens [N] float32)`.
    """
    targets, counted = next_token_targets(input_ids, loss_mask)
    outputs = HiddenStates(hidden, unembed, vocab_mask)
    return reduce_over_sequence(
        token_logps(outputs, targets, counted, chunk_size=chunk_size), counted, average
    )
