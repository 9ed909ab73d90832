"""Batched sampling that keeps the tokens: several completions per prompt, with their log-probabilities,
on a device mesh, across processes, resumable.

`sample_token_ids` draws `num_samples` completions of each left-padded prompt and returns the tokens,
masks and log pi of what was sampled, not only text: KL estimates need log pi of exactly the sampled
tokens, and the reference's log-prob of the same tokens. Sample j of prompt i is row i * num_samples + j
of the result, whatever happened on the way:
  * prompts are sorted by length and cut into batches of `batch_size` rows (prompts x samples), each
    batch trimmed to its longest prompt (widths rounded up to `WIDTH_STEP`, so few programs compile);
  * a batch's rows are split over the mesh's batch axes and its prompts over the processes (each
    transfers only its own rows); every process gets the whole result back, in prompt order;
  * the K samples of a prompt are K rows of one batch continuing one prefill;
  * each prompt's random numbers come from (seed, prompt index, sample index) only
    (`sharded.row_keys`), so the result does not depend on the batching, the mesh or the processes;
  * with `resume_path`, finished prompts are appended to a JSON-lines file after each batch and
    reused by a rerun (`resume.FinishedPrompts`).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.sampling.resume import FinishedPrompts, job_digest, prompt_digest
from dpo_jax.sampling.settings import SamplingSettings
from dpo_jax.sampling.sharded import (
    batch_arrays,
    decode_placement,
    decode_program,
    default_mesh,
    place_params,
    prompts_per_call,
)
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, gather_to_host

logger = logging.getLogger("dpo_jax")

# Batch widths are rounded up to a multiple of this (capped at the prompts' width): fewer distinct
# shapes to compile, at most WIDTH_STEP - 1 columns of padding more than the longest prompt needs.
WIDTH_STEP = 32


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


@dataclasses.dataclass(frozen=True)
class MeshSampler:
    """A model's params laid out for decoding on a mesh (`sharded.decode_placement`)."""

    model: object
    params: object
    placement: object

    @classmethod
    def create(cls, model, params, mesh=None, rules=DEFAULT_LOGICAL_AXIS_RULES, *, placement=None) -> MeshSampler:
        """`placement`: a `decode_placement` of this model made earlier (a sweep works it out once)."""
        if placement is None:
            placement = decode_placement(model, default_mesh() if mesh is None else mesh, rules)
        return cls(model, place_params(params, placement), placement)


def _batches(lengths: np.ndarray, prompts_per_batch: int) -> list[np.ndarray]:
    """Prompt indices sorted by length (longest first, stable), cut into batches."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + prompts_per_batch] for i in range(0, len(order), prompts_per_batch)]


def sample_token_ids(
    model,
    params,
    prompt_ids: np.ndarray,
    prompt_mask: np.ndarray,
    *,
    settings: SamplingSettings,
    num_samples: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    eos_id: int | None,
    pad_id: int,
    mesh=None,
    resume_path: str | None = None,
    model_identity: str = "",
) -> Samples:
    """`num_samples` completions of each left-padded prompt, as token ids (`texts` left empty).

    `settings`: the `SamplingSettings` (temperature, top_k, top_p, max_new_tokens); `batch_size` counts rows
    (prompts x samples) per decode call. `params` may be host arrays or a `MeshSampler` (placed
    once, reused across calls). The same seed gives the same random numbers whatever the params, so
    models are compared on equal terms. `resume_path`: the JSON-lines file of finished prompts, for
    this job (`model_identity` tells apart models sampled into one file); it must be on a filesystem
    every process sees.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"need num_samples >= 1 and batch_size >= 1, got {num_samples}, {batch_size}")
    sampler = params if isinstance(params, MeshSampler) else MeshSampler.create(model, params, mesh)
    prompt_ids, prompt_mask = np.asarray(prompt_ids, np.int32), np.asarray(prompt_mask, np.int32)
    if not np.all(prompt_mask[:, -1]):
        raise ValueError("prompts must be left padded: prompt_mask[:, -1] must be 1 in every row")
    num_prompts, width = prompt_ids.shape
    if not isinstance(settings, SamplingSettings):
        raise TypeError(f"settings must be a SamplingSettings (validated once), not {type(settings).__name__}")
    max_new_tokens, traced = settings.max_new_tokens, settings.traced()
    job = job_digest(
        settings=settings.as_dict(), num_samples=num_samples, seed=seed, eos=eos_id, pad=pad_id, model=model_identity
    )
    finished = FinishedPrompts(resume_path, job)
    hashes = [prompt_digest(prompt_ids[i], prompt_mask[i]) for i in range(num_prompts)]
    tokens = np.full((num_prompts, num_samples, max_new_tokens), pad_id, np.int32)
    mask = np.zeros((num_prompts, num_samples, max_new_tokens), np.int32)
    logps = np.zeros((num_prompts, num_samples), np.float64)
    todo = []
    for i in range(num_prompts):
        record = finished.done(i, hashes[i])
        if record is None:
            todo.append(i)
        else:
            tokens[i], mask[i], logps[i] = record["tokens"], record["mask"], record["logps"]
    _check_agreement(np.asarray(todo, np.int64), num_prompts)

    per_batch = prompts_per_call(batch_size, num_samples, sampler.placement.mesh)
    lengths = prompt_mask.sum(axis=1)
    todo = np.asarray(todo, np.int64)
    options = dict(
        max_new_tokens=max_new_tokens,
        num_samples=num_samples,
        filter_tokens=settings.filters_tokens,
        eos_id=None if eos_id is None else int(eos_id),
        pad_id=int(pad_id),
    )
    placement = sampler.placement
    program = decode_program(sampler.model, (placement.mesh, placement.rules), **options)
    for batch in _batches(lengths[todo], per_batch):
        chosen = todo[batch]
        rows = np.resize(chosen, per_batch)  # a short last batch repeats prompts
        batch_width = min(width, -(-int(lengths[rows].max()) // WIDTH_STEP) * WIDTH_STEP)
        inputs = batch_arrays(
            placement.mesh,
            dict(
                ids=prompt_ids[rows, width - batch_width :],
                mask=prompt_mask[rows, width - batch_width :],
                index=rows.astype(np.int32),
            ),
        )
        seed_value = jnp.uint32(seed % 2**32)
        out = gather_to_host(program(sampler.params, inputs["ids"], inputs["mask"], inputs["index"], seed_value, traced))
        keep = len(chosen)
        shape = (per_batch, num_samples, max_new_tokens)
        got_tokens = np.asarray(out["tokens"]).reshape(shape)[:keep]
        got_mask = np.asarray(out["mask"]).reshape(shape)[:keep]
        got_logps = (np.asarray(out["logprobs"], np.float64).reshape(shape)[:keep] * got_mask).sum(axis=2)
        tokens[chosen], mask[chosen], logps[chosen] = got_tokens, got_mask, got_logps
        finished.append(
            [
                dict(
                    prompt=int(i),
                    prompt_hash=hashes[i],
                    tokens=tokens[i].tolist(),
                    mask=mask[i].tolist(),
                    logps=logps[i].tolist(),
                )
                for i in chosen
            ]
        )
    rows_of = lambda x: x.reshape(num_prompts * num_samples, *x.shape[2:])  # noqa: E731
    return Samples(
        np.repeat(prompt_ids, num_samples, axis=0),
        np.repeat(prompt_mask, num_samples, axis=0),
        rows_of(tokens),
        rows_of(mask),
        rows_of(logps),
        [],
        num_samples,
    )


def _check_agreement(todo: np.ndarray, num_prompts: int) -> None:
    """Every process must run the same batches: the prompts left to sample must agree."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    flags = np.zeros((num_prompts,), np.int32)
    flags[todo] = 1
    first = multihost_utils.broadcast_one_to_all(flags)
    if not np.array_equal(np.asarray(first), flags):
        raise RuntimeError(
            "processes disagree on which prompts are finished: the resume file must be on a filesystem "
            "every process sees"
        )
