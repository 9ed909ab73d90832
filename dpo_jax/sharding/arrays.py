"""Input and output arrays across devices and hosts: the global batch and gathers back to the host.

Each process loads its own rows; `make_global_batch` joins them into global arrays whose first
dimension is split over the data-parallel mesh axes, and `gather_to_host` brings sharded results back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dpo_jax.sharding.mesh import BATCH_MESH_AXES


def data_parallel_size(mesh: Mesh) -> int:
    """Number of ways the batch is split: the product of the data and fsdp mesh axes."""
    return math.prod(mesh.shape[axis] for axis in BATCH_MESH_AXES)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Sharding of an input array: rows over ("data", "fsdp"), every other dimension replicated."""
    if ndim < 1:
        raise ValueError(f"A batch array needs at least one dimension to shard; got ndim={ndim}.")
    return NamedSharding(mesh, PartitionSpec(BATCH_MESH_AXES, *([None] * (ndim - 1))))


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Joins every process's rows into global arrays sharded by `batch_sharding`.

    Each process passes its own slice (the same number of rows everywhere). A global batch that the
    data-parallel size does not divide is an error rather than a silent replication.
    """
    dp_size = data_parallel_size(mesh)
    process_count = jax.process_count()
    global_batch = {}
    for name, local_array in local_batch.items():
        local_array = np.asarray(local_array)
        if local_array.ndim < 1:
            raise ValueError(f"Batch entry {name!r} is a scalar; every entry needs a leading row dimension.")
        local_rows = local_array.shape[0]
        global_shape = (local_rows * process_count, *local_array.shape[1:])
        if global_shape[0] % dp_size:
            raise ValueError(
                f"Batch entry {name!r}: global batch of {global_shape[0]} rows ({local_rows} per process x "
                f"{process_count} processes) does not divide by the data-parallel size {dp_size} "
                f"(data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']})."
            )
        global_array = jax.make_array_from_process_local_data(
            batch_sharding(mesh, local_array.ndim), local_array, global_shape
        )
        if global_array.shape != global_shape:
            raise AssertionError(
                f"Batch entry {name!r}: built a global array of shape {global_array.shape}, "
                f"expected {global_shape}."
            )
        global_batch[name] = global_array
    return global_batch


def gather_to_host(tree: Any) -> Any:
    """Full host (numpy) copies of possibly multi-host sharded arrays, on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
