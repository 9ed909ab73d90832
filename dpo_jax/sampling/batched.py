"""Batched sampling that keeps the tokens: several completions per prompt, with their log-probabilities.

`sample_token_ids` draws `num_samples` completions of each left-padded prompt with the KV-cache sampler
(`generate`) and returns the tokens, masks and log pi of what was sampled, not only text: KL estimates
need log pi of exactly the sampled tokens, and the reference's log-prob of the same tokens. Sample j of
prompt i is row i * num_samples + j; every generate call has the same batch shape (the last batch
repeats rows), so one compiled program serves a whole sweep (temperature is a traced value).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from dpo_jax.sampling.generate import generate


@dataclasses.dataclass(frozen=True)
class Samples:
    """num_samples completions of each of N prompts; rows i * num_samples + j."""

    prompt_ids: np.ndarray  # [N * S, P] left padded
    prompt_mask: np.ndarray  # [N * S, P]
    tokens: np.ndarray  # [N * S, T]
    mask: np.ndarray  # [N * S, T], 1 up to and including EOS
    logps: np.ndarray  # [N * S] float64 sum of log pi(y_t | ...) under the sampled model's raw distribution
    texts: list[str]  # decoded completions without EOS (empty when sampled from token ids)
    num_samples: int

    @property
    def prompt_index(self) -> np.ndarray:
        return np.arange(len(self.tokens)) // self.num_samples

    def per_prompt(self) -> list[list[str]]:
        s = self.num_samples
        return [self.texts[i : i + s] for i in range(0, len(self.texts), s)]


def sample_token_ids(
    model,
    params,
    prompt_ids: np.ndarray,
    prompt_mask: np.ndarray,
    *,
    settings: dict,
    num_samples: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    eos_id: int | None,
    pad_id: int,
) -> Samples:
    """`num_samples` completions of each left-padded prompt, as token ids (`texts` left empty).

    `settings` are generate's temperature, top_k, top_p and max_new_tokens. The same seed gives the
    same random numbers whatever the params, so models are compared on equal terms.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"need num_samples >= 1 and batch_size >= 1, got {num_samples}, {batch_size}")
    ids, mask = np.repeat(prompt_ids, num_samples, axis=0), np.repeat(prompt_mask, num_samples, axis=0)
    rows_total = len(ids)
    batch_size = min(batch_size, rows_total)
    rng = jax.random.key(seed)
    tokens, token_mask, logps = [], [], []
    for batch_index, start in enumerate(range(0, rows_total, batch_size)):
        rows = np.arange(start, start + batch_size) % rows_total  # the last batch repeats rows
        out = generate(
            model,
            params,
            ids[rows],
            mask[rows],
            rng=jax.random.fold_in(rng, batch_index),
            eos_id=eos_id,
            pad_id=pad_id,
            **settings,
        )
        keep = min(batch_size, rows_total - start)
        out_mask = np.asarray(out["mask"])[:keep]
        tokens.append(np.asarray(out["tokens"])[:keep])
        token_mask.append(out_mask)
        logps.append((np.asarray(out["logprobs"], np.float64)[:keep] * out_mask).sum(axis=1))
    return Samples(
        ids, mask, np.concatenate(tokens), np.concatenate(token_mask), np.concatenate(logps), [], num_samples
    )
