"""Batched autoregressive sampling from our GPT-2 / GPT-NeoX modules with the key/value cache.

Owns `generate` and the program it jits, `decode_loop` (a pure function other programs embed, e.g.
PPO's rollout): one prefill forward per prompt that keeps only the last position's logits, then one
token per step inside a `jax.lax.while_loop` (no host round trip per token, so it runs unchanged with
params sharded on a mesh: jit follows the shardings of its inputs), the cache carried through the
loop and written in place (`dynamic_update_slice` on a loop-carried buffer). K samples of a prompt
are K rows of one batch continuing one prefill. The loop ends early once every row has emitted EOS.
The settings (`sampling.settings.SamplingSettings`) are validated where they are made; temperature,
top_k and top_p are traced values: a sweep over them reuses one compiled program per
(model, shapes, eos_id, pad_id, filtering on or off).

Conventions:
  * Prompts are LEFT padded and `prompt_mask` marks real tokens. Positions are `cumsum(mask) - 1`,
    so a padded row samples exactly what the same prompt unpadded would with the same row key
    (each row draws its noise from its own key: see `_choose_tokens`). Every row needs at least
    one real prompt token (the last prompt column must be real for every row).
  * The attention mask handed to the model is cache wide, `[B, P + max_new_tokens]`: the prompt
    mask followed by ones. Cache slots not written yet are hidden by causality.
  * `logprobs` are under the MODEL's distribution, log softmax(logits) at temperature 1 without
    top-k / top-p filtering, i.e. log pi(y_t | x, y_<t) as `sequence_logps` defines it everywhere
    else in the project. It is therefore defined for greedy decoding too, and summing it over the
    mask gives log pi(y|x); it equals the sampling distribution's log-prob only when
    temperature == 1, top_k == 0 and top_p == 1.
"""

from __future__ import annotations

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.models import init_cache
from dpo_jax.sampling.settings import SamplingSettings


def _filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Logits with every token outside the top-k / nucleus set at -inf (HF's order: k, then p).

    Filtering happens in sorted order so that ties are resolved like `argmax` (lowest index first):
    top_k == 1 and a tiny top_p then reproduce greedy decoding exactly.
    """
    vocab = logits.shape[-1]
    sorted_logits, sorted_ids = jax.lax.top_k(logits, vocab)
    rank = jnp.arange(vocab)
    sorted_logits = jnp.where((top_k == 0) | (rank < top_k), sorted_logits, -jnp.inf)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The smallest prefix whose mass reaches top_p; the most likely token is always kept.
    sorted_logits = jnp.where((mass_before < top_p) | (rank == 0), sorted_logits, -jnp.inf)
    # Scatter back to vocabulary order: sorted_ids is a permutation per row.
    inverse = jnp.argsort(sorted_ids, axis=-1)
    return jnp.take_along_axis(sorted_logits, inverse, axis=-1)


def first_argmax(x: jax.Array) -> jax.Array:
    """`argmax` over the last axis (ties to the lowest index), as two plain reductions.

    XLA's CPU argmax is a variadic (value, index) reduce that does not vectorise: over a 50k
    vocabulary it costs twice a max and a min together.
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    index = jnp.arange(x.shape[-1], dtype=jnp.int32)
    return jnp.min(jnp.where(x == top, index, x.shape[-1]), axis=-1)


# The two-level inverse-CDF search cuts the vocabulary into a multiple of CDF_BLOCK_MULTIPLE blocks
# (`_block_count`). Padded vocabularies are multiples of 128 (`models.config.VOCAB_PAD_MULTIPLE`), so
# a vocabulary split over up to 128 tensor shards splits on block boundaries, and the search runs as
# reductions over the shards (no gather of a row's whole vocabulary per token).
CDF_BLOCK_MULTIPLE = 128
CDF_MAX_BLOCKS = 512


def _block_count(vocab: int) -> int:
    """The most blocks, up to CDF_MAX_BLOCKS, that are a multiple of CDF_BLOCK_MULTIPLE and divide `vocab`
    (itself a multiple of CDF_BLOCK_MULTIPLE)."""
    units = vocab // CDF_BLOCK_MULTIPLE
    return CDF_BLOCK_MULTIPLE * max(
        d for d in range(1, CDF_MAX_BLOCKS // CDF_BLOCK_MULTIPLE + 1) if units % d == 0
    )


def _last_positive(weights: jax.Array) -> jax.Array:
    """Index of the last entry > 0 along the last axis."""
    index = jnp.arange(weights.shape[-1], dtype=jnp.int32)
    return jnp.max(jnp.where(weights > 0, index, -1), axis=-1)


def _pick(values: jax.Array, index: jax.Array) -> jax.Array:
    """values[b, index[b]] along axis 1, as a sum with zeros (exact, and a reduction where the axis is
    split over devices, not a gather)."""
    positions = jnp.arange(values.shape[1], dtype=jnp.int32).reshape((1, -1) + (1,) * (values.ndim - 2))
    chosen = positions == index.reshape((-1,) + (1,) * (values.ndim - 1))
    return jnp.sum(jnp.where(chosen, values, 0), axis=1)


def inverse_cdf(weights: jax.Array, u: jax.Array) -> jax.Array:
    """Per row, index i drawn with probability weights[i] / sum(weights) from one uniform u in [0, 1):
    the first index whose running sum exceeds u * sum(weights).

    The running sum is taken in two levels, over blocks (`_block_count`) and then inside the block the
    target falls in, so nothing scans the whole vocabulary. An index is only ever chosen where its
    weight is > 0 (a running sum that rises has a positive step; rounding at a block's end falls back
    to its last positive entry), so filtered-out tokens (weight 0) are never drawn.
    weights: [B, V] >= 0 with a positive entry in every row; u: [B].
    """
    rows, vocab = weights.shape
    padded = -(-vocab // CDF_BLOCK_MULTIPLE) * CDF_BLOCK_MULTIPLE  # a no-op for a model's padded vocabulary
    weights = jnp.pad(weights, ((0, 0), (0, padded - vocab)))
    count = _block_count(padded)
    blocks = weights.reshape(rows, count, padded // count)
    sums = jnp.sum(blocks, axis=-1)  # [B, blocks]
    running = jnp.cumsum(sums, axis=-1)
    target = u * running[:, -1]
    chosen = jnp.minimum(jnp.sum(running <= target[:, None], axis=-1), _last_positive(sums))
    before = jnp.where(chosen > 0, _pick(running, jnp.maximum(chosen - 1, 0)), 0.0)
    inner = _pick(blocks, chosen)  # [B, block]
    inner_running = jnp.cumsum(inner, axis=-1)
    index = jnp.minimum(jnp.sum(inner_running <= (target - before)[:, None], axis=-1), _last_positive(inner))
    return (chosen * (padded // count) + index).astype(jnp.int32)


def _choose_tokens(logits, row_keys, step, settings, *, filter_tokens):
    """Next token per row and its log-prob under the model's raw distribution.

    Sampling draws one uniform per row, from `fold_in(row_keys[b], step)`, and inverts the tempered
    (and filtered) softmax's CDF with it (`inverse_cdf`): a row's tokens depend on its own key only,
    never on its position in the batch or on the batch size, so prompts can be split across devices,
    processes and calls in any way and give the same completions. One uniform per row rather than a
    Gumbel draw per vocabulary entry: on a CPU the random bits of a 50k vocabulary cost more than the
    rest of the choice. `settings` holds traced (temperature, top_k, top_p), so one compiled program
    serves every temperature (a sweep from greedy to 1 compiles once); only whether to run the
    sort-based filter at all is static. Temperature 0 is greedy (`first_argmax` of the raw logits).
    """
    temperature, top_k, top_p = settings
    logits = logits.astype(jnp.float32)
    greedy = temperature == 0.0
    tempered = logits / jnp.where(greedy, 1.0, temperature)
    if filter_tokens:
        tempered = _filter_logits(tempered, top_k, top_p)
    weights = jnp.exp(tempered - jnp.max(tempered, axis=-1, keepdims=True))  # filtered tokens: exactly 0
    u = jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(key, step)))(row_keys)
    tokens = jnp.where(greedy, first_argmax(logits), inverse_cdf(weights, u))
    top = jnp.max(logits, axis=-1)
    log_normaliser = top + jnp.log(jnp.sum(jnp.exp(logits - top[:, None]), axis=-1))
    logprobs = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0] - log_normaliser
    return tokens, logprobs


def head_logits(model: nn.Module, params, hidden: jax.Array) -> jax.Array:
    """Logits `[B, padded V]` (fp32) of final hidden states `[B, D]`: the language model's own head,
    applied to the positions that are sampled from only (the prefill's last one, not its whole
    prompt). The padding entries past `vocab_size` are -inf (never sampled, nothing in the softmax):
    kept rather than sliced off so that a vocabulary split over tensor shards stays split evenly."""
    cfg = model.config
    if cfg.tie_word_embeddings:
        table = params[model.embed_name]["embedding"]  # [padded V, D]
        logits = jnp.einsum("bd,vd->bv", hidden, table.astype(hidden.dtype))
    else:
        logits = hidden @ params["embed_out"]["kernel"].astype(hidden.dtype)
    logits = logits.astype(jnp.float32)
    if model.head_bias:  # GPT-J
        logits = logits + params["embed_out"]["bias"].astype(jnp.float32)
    if cfg.padded_vocab_size == cfg.vocab_size:
        return logits
    return jnp.where(jnp.arange(logits.shape[-1]) < cfg.vocab_size, logits, -jnp.inf)


def _repeat_rows(cache, times: int):
    """Each row of the cache `times` times in a row (rows i * times + j): the K samples of a prompt
    continue one prefill. Key/value leaves are [.., B, L, H, D] (a leading layer axis when scanned)."""

    def repeat(path, leaf):
        name = jax.tree_util.keystr(path)
        if "cached_key" in name or "cached_value" in name:
            return jnp.repeat(leaf, times, axis=leaf.ndim - 4)
        return leaf

    return jax.tree_util.tree_map_with_path(repeat, cache)


def decode_loop(
    model,
    params,
    prompt_ids,
    prompt_mask,
    row_keys,
    settings,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    filter_tokens: bool = False,
    eos_id: int | None = None,
    pad_id: int = 0,
    forward_context=contextlib.nullcontext,
):
    """The whole sampler as one traceable function (no jit of its own), for programs that embed it
    (PPO's rollout step): `generate` without the checks, with per-row keys.

    prompt_ids / prompt_mask: [N, P] left padded; row_keys: [N * num_samples] PRNG keys, row
    i * num_samples + j being sample j of prompt i; settings: traced (temperature, top_k, top_p).
    `forward_context()` is entered around each model forward (the mesh sampler's sharding context,
    under which the model's activation constraints bind). Returns `generate`'s dict over
    N * num_samples rows.
    """
    num_prompts, prompt_length = prompt_ids.shape
    batch = num_prompts * num_samples
    prompt_mask = prompt_mask.astype(jnp.int32)
    cache_length = prompt_length + max_new_tokens
    choose = functools.partial(_choose_tokens, settings=settings, filter_tokens=filter_tokens)

    def forward(cache, ids, attention_mask, positions):
        with forward_context():
            hidden, state = model.apply(
                {"params": params, "cache": cache},
                ids,
                attention_mask,
                positions,
                decode=True,
                return_hidden=True,
                mutable=["cache"],
            )
            return head_logits(model, params, hidden[:, -1]), state["cache"]

    def emit(step, logits, outputs, done):
        """Sample token `step` for every row; rows already past EOS emit pad_id."""
        tokens, logprobs, mask = outputs
        new_tokens, new_logprobs = choose(logits, row_keys, step)
        new_tokens = jnp.where(done, pad_id, new_tokens)
        new_logprobs = jnp.where(done, 0.0, new_logprobs)
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, new_tokens[:, None], step, axis=1)
        logprobs = jax.lax.dynamic_update_slice_in_dim(logprobs, new_logprobs[:, None], step, axis=1)
        mask = jax.lax.dynamic_update_slice_in_dim(mask, jnp.where(done, 0, 1)[:, None], step, axis=1)
        if eos_id is not None:
            done = done | (new_tokens == eos_id)
        return (tokens, logprobs, mask), done

    # One prefill per prompt, whatever num_samples: the samples share its cache.
    prompt_attention = jnp.concatenate(
        [prompt_mask, jnp.ones((num_prompts, max_new_tokens), jnp.int32)], axis=1
    )
    prompt_positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)
    cache = init_cache(model, num_prompts, cache_length)
    logits, cache = forward(cache, prompt_ids, prompt_attention, prompt_positions)
    if num_samples > 1:
        cache = _repeat_rows(cache, num_samples)
        logits = jnp.repeat(logits, num_samples, axis=0)
    attention_mask = jnp.repeat(prompt_attention, num_samples, axis=0)
    num_prompt_tokens = jnp.repeat(jnp.sum(prompt_mask, axis=1), num_samples)
    outputs = (
        jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
        jnp.zeros((batch, max_new_tokens), jnp.float32),
        jnp.zeros((batch, max_new_tokens), jnp.int32),
    )
    outputs, done = emit(0, logits, outputs, jnp.zeros((batch,), bool))

    def keep_going(carry):
        step, _, _, done = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def decode_step(carry):
        # Feed token step-1 (at position prompt length + step - 1) to get the logits of token `step`.
        step, cache, outputs, done = carry
        previous = jax.lax.dynamic_slice_in_dim(outputs[0], step - 1, 1, axis=1)
        positions = (num_prompt_tokens + step - 1)[:, None]
        logits, cache = forward(cache, previous, attention_mask, positions)
        outputs, done = emit(step, logits, outputs, done)
        return step + 1, cache, outputs, done

    _, _, outputs, _ = jax.lax.while_loop(keep_going, decode_step, (jnp.int32(1), cache, outputs, done))
    tokens, logprobs, mask = outputs
    return {"tokens": tokens, "logprobs": logprobs, "mask": mask}


_generate = jax.jit(
    decode_loop,
    static_argnames=(
        "model",
        "max_new_tokens",
        "num_samples",
        "filter_tokens",
        "eos_id",
        "pad_id",
        "forward_context",
    ),
)


def row_keys_from(rng: jax.Array, rows: int) -> jax.Array:
    """Row b's key `fold_in(rng, b)`, for callers that hand `generate` one key for the batch."""
    return jax.vmap(lambda row: jax.random.fold_in(rng, row))(jnp.arange(rows, dtype=jnp.uint32))


def generate(
    model: nn.Module,
    params,
    prompt_ids,
    prompt_mask,
    *,
    settings: SamplingSettings,
    rng: jax.Array,
    eos_id: int | None = None,
    pad_id: int = 0,
    num_samples: int = 1,
) -> dict[str, jax.Array]:
    """Sample `max_new_tokens` continuations of left-padded prompts, `num_samples` of each.

    Args:
      model: a `GPT2LMHeadModel` / `GPTNeoXForCausalLM` / `GPTJForCausalLM` (anything taking `decode=True`
        and a cache).
      params: its params (plain or sharded arrays; the jitted program follows their shardings).
      prompt_ids: `[B, P]` int, left padded.
      prompt_mask: `[B, P]`, 1 on real prompt tokens.
      settings: `SamplingSettings` (validated when made): temperature (0: greedy argmax, top_k / top_p
        then irrelevant; else logits / temperature), top_k (keep the k most likely tokens; 0: all),
        top_p (nucleus: the smallest most-likely set of mass >= top_p; 1: all) and max_new_tokens
        (decoding steps; P + max_new_tokens must fit the model's positions).
      rng: a jax PRNG key (row b then gets `fold_in(rng, b)`) or `[B * num_samples]` keys, one per
        output row; token t of a row uses `fold_in(row_key, t)`, so results depend neither on early
        stopping nor on which other rows share the batch.
      eos_id: a row stops after emitting it (None: never stops early).
      pad_id: emitted after EOS.
      num_samples: completions per prompt, output rows i * num_samples + j; the prompt is prefilled
        once and its cache shared by its samples.

    Returns:
      dict over B * num_samples rows of `tokens [., max_new_tokens] int32`, `logprobs [B, max_new_tokens] float32` (the model's
      raw log pi of each emitted token, see the module docstring; 0 after EOS), and
      `mask [B, max_new_tokens] int32` (1 up to and including the first EOS, 0 after).
    """
    if not isinstance(settings, SamplingSettings):
        raise TypeError(f"settings must be a SamplingSettings (validated once), not {type(settings).__name__}")
    max_new_tokens = settings.max_new_tokens
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1")
    prompt_mask_in = prompt_mask
    prompt_ids = jnp.asarray(prompt_ids, jnp.int32)
    prompt_mask = jnp.asarray(prompt_mask, jnp.int32)
    if prompt_ids.ndim != 2 or prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"prompt_ids {prompt_ids.shape} and prompt_mask {prompt_mask.shape} must be [B, P]")
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_positions is not None and prompt_ids.shape[1] + max_new_tokens > max_positions:
        # GPT-2's position table would silently clamp out-of-range positions.
        raise ValueError(
            f"prompt length {prompt_ids.shape[1]} + max_new_tokens={max_new_tokens} exceeds the model's "
            f"max_position_embeddings={max_positions}"
        )
    if isinstance(prompt_mask_in, np.ndarray) and not np.all(prompt_mask_in[:, -1]):
        # Right padding would make the prefill read a pad position's logits: fail instead.
        raise ValueError("prompts must be left padded: prompt_mask[:, -1] must be 1 in every row")
    rows = prompt_ids.shape[0] * num_samples
    if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)  # a legacy uint32 key (jax.random.PRNGKey) or keys
    row_keys = rng if rng.shape else row_keys_from(rng, rows)
    if row_keys.shape != (rows,):
        raise ValueError(
            f"rng holds keys of shape {row_keys.shape}; expected one key or ({rows},): one a row"
        )
    return _generate(
        model,
        params,
        prompt_ids,
        prompt_mask,
        row_keys,
        settings.traced(),
        max_new_tokens=max_new_tokens,
        filter_tokens=settings.filters_tokens,
        eos_id=None if eos_id is None else int(eos_id),
        pad_id=int(pad_id),
        num_samples=num_samples,
    )
