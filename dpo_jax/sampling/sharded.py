"""The sampler on a device mesh: where the params sit for decoding, and the compiled decode program.

Placement, decided from the compiled program (tests/sampling/test_sharded.py reads it). Left in the
training layout (FSDP: weights split over "fsdp"), the decode program all-gathers every weight, and
XLA hoists those gathers out of the decode loop (the weights are loop invariants): no collective per
token, but a whole gathered copy held for the whole loop beside the shards, and a gather per call. So
FSDP saves no memory while decoding. `decode_placement` therefore maps no weight axis onto the batch
axes ("data", "fsdp"): where one copy fits a device (at most `FIT_FRACTION` of its memory, known on
accelerators; always on CPU) weights are replicated over them and split over "tensor" as the run's
rules say, the rows of a batch split over data x fsdp: a generated token costs no collective on a
mesh without a tensor axis, and where there is one a forward's tensor-parallel reductions and the
sampler's CDF search over the vocabulary-split probabilities (reductions, and a gather of each
row's block sums: kilobytes, never weights). Where a
copy does not fit, the devices are regrouped into a decode mesh with a larger tensor axis (the
smallest that fits, dividing the head count), so the weights are split over tensor, not gathered.
`dpo_jax.perf.hlo.decode_loop_collectives` counts the collectives of the decode loop's body: those
run once per generated token.

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
    sharding_context,
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
    mesh: Mesh  # the decode mesh: the run's, or its devices regrouped with a larger tensor axis
    rules: tuple
    shardings: Any  # NamedSharding per param leaf
    layout: str
    param_bytes_per_device: int


def _tensor_sizes(mesh: Mesh, num_heads: int) -> list[int]:
    """Tensor-axis sizes to try, smallest first: the run's, then larger ones dividing the device count
    and the head count."""
    count, start = mesh.devices.size, mesh.shape["tensor"]
    larger = [
        t for t in range(start + 1, count + 1) if count % t == 0 and num_heads % t == 0 and t % start == 0
    ]
    return [start, *larger]


def free_device_bytes(mesh: Mesh) -> int | None:
    """What a device has left now (its limit less what is allocated; None where the backend reports
    no limit, e.g. CPU): the room a program that runs beside the resident arrays (PPO's rollout, with
    the train state, reference and reward model on the devices) can place a decode copy in."""
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    stats = (local or list(mesh.devices.flat))[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return None if limit is None else max(0, limit - stats.get("bytes_in_use", 0))


def _regrouped(mesh: Mesh, tensor: int, keep_device_order: bool) -> Mesh:
    devices = list(mesh.devices.flat)
    if not keep_device_order:
        return make_mesh((len(devices) // tensor, 1, tensor), devices=devices)  # laid out on the torus
    # The run's device order: one jitted program may then hold arrays of both meshes (jit needs one
    # device assignment), so PPO's rollout reshards the train state's params in its own program.
    grid = np.asarray(devices, dtype=object).reshape(len(devices) // tensor, 1, tensor)
    return Mesh(grid, mesh.axis_names, axis_types=mesh.axis_types)


def decode_placement(
    model,
    mesh: Mesh,
    rules=DEFAULT_LOGICAL_AXIS_RULES,
    device_bytes: int | None = None,
    *,
    keep_device_order: bool = False,
):
    """Where `model`'s params sit for decoding on `mesh`'s devices (see the module docstring).
    `device_bytes`: the room on a device (default: its memory limit); `keep_device_order`: a regrouped
    decode mesh keeps `mesh`'s device order (for programs that reshard from one mesh to the other)."""
    boxed, plain = abstract_params(model, boxed=True), abstract_params(model)
    device_bytes = device_memory_bytes(mesh) if device_bytes is None else device_bytes
    chosen = decode_rules(rules)
    for tensor in _tensor_sizes(mesh, model.config.num_heads):
        if tensor != mesh.shape["tensor"]:
            mesh = _regrouped(mesh, tensor, keep_device_order)
        shardings = logical_to_mesh_shardings(boxed, mesh, chosen)
        per_device = _per_device_bytes(plain, shardings)
        if device_bytes is None or per_device <= FIT_FRACTION * device_bytes:
            break
    else:
        logger.warning(
            "sampling params: %.1f MiB per device even split %d ways over tensor, over %d%% of a device",
            per_device / 2**20,
            tensor,
            100 * FIT_FRACTION,
        )
    layout = f"replicated over the batch axes, split {tensor} way(s) over tensor"
    logger.info(
        "sampling params: %s on mesh %s, %.1f MiB per device", layout, dict(mesh.shape), per_device / 2**20
    )
    return Placement(mesh, chosen, shardings, layout, per_device)


def place_params(params, placement: Placement):
    """`params` (host arrays, or arrays anywhere) laid out as `placement` says, on every process."""
    return jax.tree.map(
        lambda leaf, sharding: (
            jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])
            if isinstance(leaf, np.ndarray)
            else jax.device_put(leaf, sharding)
        ),
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
            # The model's activation constraints bind under the mesh and rules (rows over the batch
            # axes); the sampling arithmetic around them follows by propagation.
            forward_context=functools.partial(sharding_context, mesh, rules),
        )

    rows = NamedSharding(mesh, PartitionSpec(BATCH_MESH_AXES, None))
    return jax.jit(program, out_shardings=rows)


def batch_arrays(mesh: Mesh, arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Global host arrays (the same on every process) as arrays with rows over the batch axes: each
    process transfers only the rows its own devices hold."""
    out = {}
    for name, host in arrays.items():
        spec = PartitionSpec(BATCH_MESH_AXES, *([None] * (host.ndim - 1)))
        out[name] = jax.make_array_from_callback(
            host.shape, NamedSharding(mesh, spec), lambda i, h=host: h[i]
        )
    return out


def prompts_per_call(batch_size: int, num_samples: int, mesh: Mesh) -> int:
    """Prompts per decode call for `batch_size` rows (prompts x samples), at least one prompt, rounded up
    to a multiple of the batch axes' size so that prompt rows and sample rows split evenly over devices."""
    multiple = data_parallel_size(mesh)
    return -(-max(1, batch_size // num_samples) // multiple) * multiple
