"""The sampler on a device mesh: where the params sit for decoding, and the compiled decode program.

Placement. Decoding runs one small forward per token, so whatever the params' layout costs, it costs
at every token. The training layout (FSDP: weights split over the "fsdp" axis) would all-gather every
weight at every generated token. `decode_rules` therefore maps no weight axis onto the batch axes
("data", "fsdp"): weights are replicated across them and split only over "tensor" as the run's rules
say (heads, MLP and vocabulary over tensor), and the rows of a batch are split over data x fsdp, so a
generated token costs no collective at all on a mesh without a tensor axis, and the tensor-parallel
reductions of one forward where there is one. Where the replicated copy would not fit (over
`FIT_FRACTION` of a device's memory, known on accelerators only) the run's own rules are kept, and
the log says that every token then gathers the weights. `dpo_jax.perf.hlo.decode_loop_collectives`
reads the compiled program to show it: the collectives in the decode loop's body run once per token.

Random numbers. Sample j of prompt i draws its tokens from `fold_in(fold_in(key(seed), i), j)`, never
from its row in a batch, so a prompt's completions do not depend on how prompts are batched, split
over devices and processes, sorted by length, or resumed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dpo_jax.models import abstract_params
from dpo_jax.sampling.generate import decode_loop
from dpo_jax.sharding import (
    BATCH_MESH_AXES,
    DEFAULT_LOGICAL_AXIS_RULES,
    data_parallel_size,
    logical_to_mesh_shardings,
    make_mesh,
    traced_in_context,
)

logger = logging.getLogger("dpo_jax")

# Replicated weights may take at most this share of a device; the rest is the KV cache and activations.
FIT_FRACTION = 0.5


def decode_rules(rules) -> tuple:
    """`rules` with the batch mesh axes taken out of every weight axis's mapping (activations keep
    theirs): weights replicated over data and fsdp, split over tensor as before."""
    out = []
    for name, axes in rules:
        if not name.startswith("activation_") and axes is not None:
            kept = tuple(a for a in ((axes,) if isinstance(axes, str) else axes) if a not in BATCH_MESH_AXES)
            axes = None if not kept else kept[0] if len(kept) == 1 else kept
        out.append((name, axes))
    return tuple(out)


def _per_device_bytes(abstract, shardings) -> int:
    return sum(
        math.prod(sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))
    )


def device_memory_bytes(mesh: Mesh) -> int | None:
    """A device's memory limit (None where the backend reports none, e.g. CPU)."""
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    return ((local or list(mesh.devices.flat))[0].memory_stats() or {}).get("bytes_limit")


@dataclasses.dataclass(frozen=True)
class Placement:
    mesh: Mesh
    rules: tuple
    shardings: Any  # NamedSharding per param leaf
    layout: str  # "replicated over data, split over tensor" or "the run's (fsdp) layout"
    param_bytes_per_device: int


def decode_placement(model, mesh: Mesh, rules=DEFAULT_LOGICAL_AXIS_RULES, device_bytes: int | None = None):
    """Where `model`'s params sit for decoding on `mesh` (see the module docstring)."""
    boxed = abstract_params(model, boxed=True)
    plain = abstract_params(model)
    device_bytes = device_memory_bytes(mesh) if device_bytes is None else device_bytes
    layout, chosen = "replicated over data and fsdp, split over tensor", decode_rules(rules)
    shardings = logical_to_mesh_shardings(boxed, mesh, chosen)
    per_device = _per_device_bytes(plain, shardings)
    if device_bytes is not None and per_device > FIT_FRACTION * device_bytes:
        layout, chosen = "the run's layout (weights split over fsdp: gathered at every token)", tuple(rules)
        shardings = logical_to_mesh_shardings(boxed, mesh, chosen)
        per_device = _per_device_bytes(plain, shardings)
    placement = Placement(mesh, chosen, shardings, layout, per_device)
    logger.info("sampling params: %s, %.1f MiB per device", layout, per_device / 2**20)
    return placement


def place_params(params, placement: Placement):
    """`params` (host arrays, or arrays anywhere) laid out as `placement` says, on every process."""
    return jax.tree.map(
        lambda leaf, sharding: jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])
        if isinstance(leaf, np.ndarray)
        else jax.device_put(leaf, sharding),
        params,
        placement.shardings,
    )


def default_mesh() -> Mesh:
    """Every device on the data axis: the sampler's mesh when a caller names none."""
    return make_mesh((-1, 1, 1))


def row_keys(seed, prompt_index, num_samples: int) -> jax.Array:
    """[N * num_samples] keys: row i * num_samples + j is `fold_in(fold_in(key(seed), prompt_index[i]), j)`."""
    base = jax.random.key(seed)
    samples = jnp.arange(num_samples, dtype=jnp.uint32)

    def per_prompt(index):
        prompt_key = jax.random.fold_in(base, index)
        return jax.vmap(lambda j: jax.random.fold_in(prompt_key, j))(samples)

    return jax.vmap(per_prompt)(prompt_index.astype(jnp.uint32)).reshape(-1)


@functools.cache
def decode_program(model, placement_key, *, max_new_tokens, num_samples, filter_tokens, eos_id, pad_id):
    """The jitted decode program for one model, mesh and set of static settings."""
    mesh, rules = placement_key

    def program(params, prompt_ids, prompt_mask, prompt_index, seed, settings):
        keys = row_keys(seed, prompt_index, num_samples)
        return decode_loop(
            model,
            params,
            prompt_ids,
            prompt_mask,
            keys,
            settings,
            max_new_tokens=max_new_tokens,
            num_samples=num_samples,
            filter_tokens=filter_tokens,
            eos_id=eos_id,
            pad_id=pad_id,
        )

    rows = NamedSharding(mesh, PartitionSpec(BATCH_MESH_AXES, None))
    return jax.jit(traced_in_context(program, mesh, rules), out_shardings=rows)


def batch_arrays(mesh: Mesh, arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Global host arrays (the same on every process) as arrays with rows over the batch axes: each
    process transfers only the rows its own devices hold."""
    out = {}
    for name, host in arrays.items():
        spec = PartitionSpec(BATCH_MESH_AXES, *([None] * (host.ndim - 1)))
        out[name] = jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec), lambda i, h=host: h[i])
    return out


def rows_multiple(mesh: Mesh) -> int:
    return data_parallel_size(mesh)
