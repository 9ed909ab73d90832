"""Exact tables of log pi(y|x) over all V**T completions, by walking the completion tree with the KV cache.

Owns `all_completion_logprobs`, the table `exact.completion_logprobs(..., task.all_completions())`
computes by teacher forcing every completion, at a fraction of the cost: the prompt is prefilled once,
then each level of the tree decodes one token for every prefix, with the cache copied to the prefix's
V children. A prompt costs P + V + ... + V**(T-1) token positions instead of V**T * (P + T), about
7x fewer for the default task, which is what makes tables over hundreds of prompts cheap on a CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.models import init_cache


@functools.partial(jax.jit, static_argnames=("model", "vocab_size", "response_length"))
def _tree_logprobs(model, params, prompts, *, vocab_size, response_length):
    """[n, V**T] float32 log pi(y | prompt) for every completion, lexicographic (last token fastest)."""
    num_prompts, prompt_length = prompts.shape
    cache_length = prompt_length + response_length - 1
    # The cache's key/value arrays carry the batch on axis 0, or on axis 1 behind the layer axis of
    # a scanned stack; the cache index (a scalar per layer) has no batch axis.
    batch_axis = 1 if model.config.scan_layers else 0

    def forward(cache, tokens, positions):
        rows = tokens.shape[0]
        logits, state = model.apply(
            {"params": params, "cache": cache},
            tokens,
            jnp.ones((rows, cache_length), jnp.int32),
            positions,
            decode=True,
            mutable=["cache"],
        )
        return jax.nn.log_softmax(logits[:, -1].astype(jnp.float32), axis=-1), state["cache"]

    positions = jnp.broadcast_to(jnp.arange(prompt_length, dtype=jnp.int32), prompts.shape)
    logps, cache = forward(init_cache(model, num_prompts, cache_length), prompts, positions)
    for step in range(1, response_length):
        # Row r * V + v continues prefix r with token v: the order of `all_completions()`.
        cache = jax.tree.map(
            lambda leaf: (
                jnp.repeat(leaf, vocab_size, axis=batch_axis) if leaf.ndim > batch_axis + 1 else leaf
            ),
            cache,
        )
        rows = logps.size
        tokens = jnp.tile(jnp.arange(vocab_size, dtype=jnp.int32), rows // vocab_size)[:, None]
        next_logps, cache = forward(cache, tokens, jnp.full((rows, 1), prompt_length + step - 1, jnp.int32))
        logps = logps.reshape(rows, 1) + next_logps
    return logps.reshape(num_prompts, vocab_size**response_length)


def all_completion_logprobs(
    model, params, prompts: np.ndarray, *, vocab_size: int, response_length: int, batch_size: int
) -> np.ndarray:
    """[N, V**T] float64 log pi(y | x_n) for every completion, in `SyntheticTask.all_completions()` order.

    Args:
      model: a GPT-2 / GPT-NeoX module of this package (anything taking a cache with `decode=True`)
        whose vocabulary is the task's V, so that each row of exp() sums to 1.
      params: its params.
      prompts: [N, P] int.
      vocab_size, response_length: the task's V and T.
      batch_size: rows at the widest level of the tree (V**(T-1) per prompt) per compiled call; the
        prompts go in chunks of batch_size // V**(T-1) (at least one), the last padded with repeats.
    """
    prompts = np.asarray(prompts, np.int32)
    per_call = max(1, batch_size // vocab_size ** (response_length - 1))
    chunks = []
    # Dispatch every chunk before reading any back, so host and device work overlap.
    for start in range(0, len(prompts), per_call):
        rows = np.arange(start, start + per_call) % len(prompts)
        chunks.append(
            _tree_logprobs(
                model, params, prompts[rows], vocab_size=vocab_size, response_length=response_length
            )
        )
    return np.concatenate([np.asarray(chunk, np.float64) for chunk in chunks])[: len(prompts)]
