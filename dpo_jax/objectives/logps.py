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

import jax
import jax.numpy as jnp

DEFAULT_CHUNK_SIZE = 128


def _next_token_targets(input_ids, loss_mask):
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
def _token_logps(logits, targets):
    """log softmax(logits)[target] in float32 for every position: `[..., V]`, `[...]` -> `[...]`.

    A hand-written VJP keeps only the logits (alive anyway) and the `[...]` float32 normalisers for the
    backward pass, which rebuilds the softmax in one fused elementwise pass. Plain autodiff would save the
    float32 `exp` of every logit, a full float32 copy of the logits held from forward to backward.
    """
    return _token_logps_forward(logits, targets)[0]


_token_logps.defvjp(_token_logps_forward, _token_logps_backward)


def _reduce_over_sequence(token_logps, counted, average):
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
    targets, counted = _next_token_targets(input_ids, loss_mask)
    return _reduce_over_sequence(_token_logps(logits, targets), counted, average)


def sequence_logps_from_hidden(
    hidden, unembed, input_ids, loss_mask, *, average=False, chunk_size=DEFAULT_CHUNK_SIZE
):
    """`sequence_logps(hidden @ unembed, ...)` without ever holding the full `[N, L, V]` logits.

    The sequence is cut into chunks of `chunk_size` positions; each chunk's logits are built, reduced to
    `[N, chunk_size]` log-probs and dropped. Each chunk is rematerialised in the backward pass
    (`jax.checkpoint`), otherwise autodiff through the loop would store every chunk's logits and bring
    the full-size array back. Chunk logits are accumulated in float32 even for bf16 inputs, so the result
    is at least as accurate as going through bf16 logits.

    Args:
      hidden: `[N, L, D]` final hidden states.
      unembed: `[D, V]` unembedding (output projection) matrix.
      input_ids, loss_mask, average: as in `sequence_logps`.
      chunk_size: positions per chunk; the peak logits memory is `N * chunk_size * V` float32 values.

    Returns:
      `(logps [N] float32, num_tokens [N] float32)`.
    """
    num_sequences, length, _ = hidden.shape
    chunk_size = max(1, min(chunk_size, length))
    num_chunks = -(-length // chunk_size)
    padding = num_chunks * chunk_size - length
    targets, counted = _next_token_targets(input_ids, loss_mask)
    # Padded positions get target 0 and never count, so they cannot change the result.
    hidden = jnp.pad(hidden, ((0, 0), (0, padding), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, padding)))

    def to_chunks(array):
        chunked = array.reshape(num_sequences, num_chunks, chunk_size, *array.shape[2:])
        return jnp.moveaxis(chunked, 1, 0)

    @jax.checkpoint
    def chunk_token_logps(chunk):
        hidden_chunk, target_chunk = chunk
        logits = jnp.einsum("ncd,dv->ncv", hidden_chunk, unembed, preferred_element_type=jnp.float32)
        return _token_logps(logits, target_chunk)

    token_logps = jax.lax.map(chunk_token_logps, (to_chunks(hidden), to_chunks(targets)))
    token_logps = jnp.moveaxis(token_logps, 0, 1).reshape(num_sequences, -1)[:, :length]
    return _reduce_over_sequence(token_logps, counted, average)
