"""Where arrays live: the device mesh, state shardings from logical axis names, and global batches."""

from dpo_jax.sharding.arrays import batch_sharding, data_parallel_size, gather_to_host, make_global_batch
from dpo_jax.sharding.mesh import (
    BATCH_MESH_AXES,
    DEFAULT_LOGICAL_AXIS_RULES,
    MESH_AXES,
    LogicalAxisRules,
    abstract_sharded_state,
    create_sharded,
    describe_shardings,
    logical_to_mesh_shardings,
    make_mesh,
    mesh_and_rules,
    resolve_mesh_shape,
    sharding_context,
    traced_in_context,
    with_shardings,
)

__all__ = [
    "BATCH_MESH_AXES",
    "DEFAULT_LOGICAL_AXIS_RULES",
    "MESH_AXES",
    "LogicalAxisRules",
    "abstract_sharded_state",
    "batch_sharding",
    "create_sharded",
    "data_parallel_size",
    "describe_shardings",
    "gather_to_host",
    "logical_to_mesh_shardings",
    "make_global_batch",
    "make_mesh",
    "mesh_and_rules",
    "resolve_mesh_shape",
    "sharding_context",
    "traced_in_context",
    "with_shardings",
]
