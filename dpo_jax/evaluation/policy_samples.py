"""Sampled completions with their log-probabilities, for win rates, KL estimates and pair generation.

`sample_policy` draws `num_samples` completions per prompt with the KV-cache sampler
(`dpo_jax.sampling.generate`) and keeps the tokens, not only the text: the KL estimate needs log pi of
exactly what was sampled, and log pi_ref of the same tokens (`score_completions`, teacher forcing).
Prompts are encoded as the sample command encodes them (no special tokens, left padded, the end kept
when too long). Sample j of prompt i is row i * num_samples + j; every generate call has the same
batch shape, so one compiled program serves a whole sweep (temperature is a traced value).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.objectives import sequence_logps
from dpo_jax.sample import encode_prompts, pad_id
from dpo_jax.sampling import generate


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


def decode_completions(tokenizer, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    texts = []
    for row, row_mask in zip(tokens, mask):
        kept = row[row_mask == 1].tolist()
        if kept and kept[-1] == tokenizer.eos_token_id:
            kept = kept[:-1]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts


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


def sample_policy(
    model,
    params,
    tokenizer,
    prompts: list[str],
    *,
    settings: dict,
    num_samples: int = 1,
    batch_size: int = 16,
    seed: int = 0,
) -> Samples:
    """`sample_token_ids` on text prompts, encoded as the sample command encodes them, with the
    completions decoded into `texts`."""
    max_new_tokens = settings["max_new_tokens"]
    max_prompt_length = model.config.max_position_embeddings - max_new_tokens
    if max_prompt_length < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
            f"{model.config.max_position_embeddings} positions"
        )
    ids, mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    samples = sample_token_ids(
        model,
        params,
        ids,
        mask,
        settings=settings,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        eos_id=tokenizer.eos_token_id,
        pad_id=pad_id(tokenizer),
    )
    return dataclasses.replace(samples, texts=decode_completions(tokenizer, samples.tokens, samples.mask))


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
