"""log pi(y | x) of already sampled completions under another model, by teacher forcing.

The sampler returns log pi of what it sampled under the model that sampled it; a KL estimate also needs
log pi_ref of the very same tokens: prompt + completion in one forward pass of the reference, the
completion's tokens counted with `sequence_logps` (positions skip the left padding, as in sampling).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.objectives import sequence_logps
from dpo_jax.sampling.batched import Samples


@functools.partial(jax.jit, static_argnames="model")
def _completion_logps(model, params, input_ids, attention_mask, loss_mask):
    # Positions skip the left padding (the model derives them from the mask), as in sampling.
    logits = model.apply({"params": params}, input_ids, attention_mask)
    return sequence_logps(logits, input_ids, loss_mask)[0]


def score_completions(model, params, samples: Samples, *, batch_size: int = 16) -> np.ndarray:
    """[N * S] float64 log pi(y | x) of the sampled completions under another model (e.g. pi_ref),
    by teacher forcing prompt + completion in one forward pass."""
    input_ids = np.concatenate([samples.prompt_ids, samples.tokens], axis=1)
    attention = np.concatenate([samples.prompt_mask, samples.mask], axis=1)
    loss_mask = np.concatenate([np.zeros_like(samples.prompt_mask), samples.mask], axis=1)
    total = len(input_ids)
    batch_size = min(batch_size, total)
    out = []
    for start in range(0, total, batch_size):
        rows = np.arange(start, start + batch_size) % total
        logps = _completion_logps(
            model,
            params,
            jnp.asarray(input_ids[rows]),
            jnp.asarray(attention[rows]),
            jnp.asarray(loss_mask[rows]),
        )
        out.append(np.asarray(logps, np.float64)[: min(batch_size, total - start)])
    return np.concatenate(out)
