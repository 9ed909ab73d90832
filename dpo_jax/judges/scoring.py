"""Scoring token sequences with our Flax sequence models on the mesh: no torch, no host CPU forward.

    scorer = MeshScorer(model, host_params, mesh=mesh, rules=rules, batch_size=64)
    logits = scorer.logits(sequences, pad_id=pad_id)       # [N, num_labels] float32, in input order

Two kinds of model: a reward model (`models.reward.ScalarHeadModel`, a GPT-2 / GPT-NeoX body with the
scalar head), whose one logit is its value at each sequence's last real token (where the trainer read it,
`models.reward.sequence_scores`), and a sequence classifier (`models.roberta`), whose logits come from
its first token. The params are placed with the shardings their logical axis names get on the mesh
(`dpo_jax.sharding`: replicated over the data axis, split over fsdp / tensor where the rules say so);
the batch is split over the data axes. Sequences are sorted by length and padded to a few bucketed
lengths (powers of two, `bucket_length`) with a fixed number of rows, so a scoring run compiles once
per bucket rather than once per batch. `score_program` is the jitted program itself, the one every
scorer runs: the judges here, PPO's reward model (`ppo.rewards`) and `aot` (`jit_score_program`: with
abstract arguments, for compiling ahead of time).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from dpo_jax.models.reward import ScalarHeadModel, sequence_scores
from dpo_jax.sharding import (
    DEFAULT_LOGICAL_AXIS_RULES,
    batch_sharding,
    data_parallel_size,
    logical_to_mesh_shardings,
    make_mesh,
    traced_in_context,
)

# The shortest padded length: below it, buckets would multiply compiles for no saving.
MIN_BUCKET = 16

# Platforms whose fast compute dtype is bf16 (tensor cores / MXUs; cuDNN's fused attention takes bf16 or
# fp16 only). A CPU gains nothing from bf16 matmuls, so scorers stay fp32 there.
BF16_PLATFORMS = ("gpu", "cuda", "rocm", "tpu")


def scorer_dtype(platform: str | None = None) -> str:
    """The compute dtype the judges load a Flax scorer in: bf16 on accelerators, fp32 on a CPU. Params
    stay fp32 and every head (the classifier's dense + out, the reward model's scalar head) runs in
    fp32, so only the body's matmuls and attention round to bf16: the scores move by what
    `tests/judges/test_scoring.py` bounds (a few bf16 ulps of the logits per layer), far below the
    differences the evaluations read (win rates compare scores; the IMDb reward is a probability)."""
    return "bfloat16" if (platform or jax.default_backend()) in BF16_PLATFORMS else "float32"


def bucket_length(length: int, limit: int) -> int:
    """The padded length of a batch whose longest sequence has `length` tokens: the next power of two
    (at least MIN_BUCKET), never past the model's `limit`."""
    return min(max(MIN_BUCKET, 1 << max(length - 1, 0).bit_length()), limit)


def num_outputs(model: nn.Module) -> int:
    return 1 if isinstance(model, ScalarHeadModel) else model.config.num_labels


def score_logits(model: nn.Module, params, input_ids, attention_mask):
    """[B, num_outputs] float32: the reward model's value at each row's last real token, or the
    classifier's logits."""
    outputs = model.apply({"params": params}, input_ids, attention_mask=attention_mask)
    if isinstance(model, ScalarHeadModel):
        return sequence_scores(outputs, attention_mask)[:, None]
    return outputs.astype(jnp.float32)


def abstract_boxed_params(model: nn.Module):
    """The params' shapes with their logical axis names, allocating nothing."""

    def init(rng):
        return model.init(rng, jnp.zeros((1, 8), jnp.int32))["params"]

    return jax.eval_shape(init, jax.random.PRNGKey(0))


def default_mesh():
    """Every device on the data axis: params replicated, rows split (the mesh for a model that fits)."""
    return make_mesh((-1, 1, 1))


def scoring_rows(batch_size: int, mesh) -> int:
    """Rows per scoring call: `batch_size`, rounded up to a multiple of the mesh's data-parallel size."""
    dp = data_parallel_size(mesh)
    return math.ceil(max(batch_size, 1) / dp) * dp


def score_program(model: nn.Module, mesh, rules=None):
    """The one scoring program: jitted `(params, input_ids, attention_mask) -> logits [B, num_outputs]`
    for batches of any shape, what the judges (`MeshScorer`), PPO's reward (`ppo.rewards`) and `aot`
    run.

    Traced inside the mesh and logical-axis-rules context (so the models' activation constraints bind),
    params in the shardings of their logical axes, the batch over the data axes, the logits gathered to
    every device."""
    rules = tuple(rules or DEFAULT_LOGICAL_AXIS_RULES)
    rows = batch_sharding(mesh, 2)
    return jax.jit(
        traced_in_context(functools.partial(score_logits, model), mesh, rules),
        in_shardings=(score_param_shardings(model, mesh, rules), rows, rows),
        out_shardings=NamedSharding(mesh, PartitionSpec()),
    )


def score_param_shardings(model: nn.Module, mesh, rules=None):
    """The shardings a scoring model's params take on `mesh`: those of their logical axis names."""
    return logical_to_mesh_shardings(abstract_boxed_params(model), mesh, tuple(rules or DEFAULT_LOGICAL_AXIS_RULES))


def jit_score_program(model: nn.Module, mesh, batch_shape: tuple[int, int], rules=None):
    """(`score_program`, its abstract arguments for batches of `batch_shape`):
    `fn.lower(*abstract_args).compile()` compiles it without any weights (for aot)."""
    fn = score_program(model, mesh, rules)
    boxed = abstract_boxed_params(model)
    param_shardings = score_param_shardings(model, mesh, rules)
    rows = batch_sharding(mesh, 2)
    abstract_params = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        nn.meta.unbox(boxed),
        param_shardings,
    )
    batch = jax.ShapeDtypeStruct(tuple(batch_shape), jnp.int32, sharding=rows)
    return fn, (abstract_params, batch, batch)


class MeshScorer:
    """A model's params placed on the mesh once, and batched scoring of token sequences (module doc)."""

    def __init__(self, model: nn.Module, host_params, *, mesh=None, rules=None, batch_size: int = 16):
        self.model = model
        self.mesh = mesh if mesh is not None else default_mesh()
        self.rules = tuple(rules or DEFAULT_LOGICAL_AXIS_RULES)
        self.batch_rows = scoring_rows(batch_size, self.mesh)
        config = model.config
        self.max_length = getattr(config, "max_sequence_length", config.max_position_embeddings)
        self._score = score_program(model, self.mesh, self.rules)  # compiled once per bucket length
        self.bucket_lengths: set[int] = set()  # the padded lengths scored so far (one compile each)
        _, (abstract_params, _, _) = jit_score_program(
            model, self.mesh, (self.batch_rows, bucket_length(1, self.max_length)), self.rules
        )
        self.params = jax.tree.map(
            lambda value, target: jax.make_array_from_callback(
                target.shape, target.sharding, lambda index, v=value: np.asarray(v)[index]
            ),
            nn.meta.unbox(host_params),
            abstract_params,
        )

    def logits(self, sequences: Sequence[Sequence[int]], *, pad_id: int) -> np.ndarray:
        """[N, num_outputs] float32 for token sequences of any lengths up to the model's positions
        (right-padded with `pad_id`, masked). Every process passes the same sequences."""
        out = np.zeros((len(sequences), num_outputs(self.model)), np.float32)
        too_long = [i for i, s in enumerate(sequences) if len(s) > self.max_length]
        if too_long:
            raise ValueError(
                f"sequence {too_long[0]} has {len(sequences[too_long[0]])} tokens; the model takes at most "
                f"{self.max_length}"
            )
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), self.batch_rows):
            chunk = order[start : start + self.batch_rows]
            length = bucket_length(max(len(sequences[i]) for i in chunk), self.max_length)
            self.bucket_lengths.add(length)
            ids = np.full((self.batch_rows, length), pad_id, np.int32)
            mask = np.zeros((self.batch_rows, length), np.int32)
            for row, index in enumerate(chunk):
                ids[row, : len(sequences[index])] = sequences[index]
                mask[row, : len(sequences[index])] = 1
            mask[len(chunk) :, 0] = 1  # filler rows: one real token, so no row is all padding
            rows = batch_sharding(self.mesh, 2)
            ids_array, mask_array = (
                jax.make_array_from_callback(a.shape, rows, lambda index, a=a: a[index]) for a in (ids, mask)
            )
            # Replicated on every device (out_shardings), so every process reads it whole.
            logits = np.asarray(self._score(self.params, ids_array, mask_array))
            out[chunk] = logits[: len(chunk)]
        return out
