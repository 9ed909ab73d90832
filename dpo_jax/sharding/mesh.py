"""The device mesh and the sharding of the train state.

Owns the ("data", "fsdp", "tensor") mesh, the table that maps the models' logical axis names onto it,
and the shardings of a state derived without materialising it (eval_shape -> partition specs ->
NamedSharding -> jit with out_shardings).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from dpo_jax import UserError

MESH_AXES = ("data", "fsdp", "tensor")
# The batch dimension is split over these axes (see dpo_jax.sharding.arrays).
BATCH_MESH_AXES = ("data", "fsdp")

# Order matters: flax assigns each logical axis the first rule whose mesh axes are still free in that
# array, so a name listed twice falls back to its later rule.
DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("activation_batch", BATCH_MESH_AXES),
    ("activation_length", None),
    # Activations keep embed whole: fsdp is already spent on the batch dimension.
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("qkv", None),
    ("norm", None),
    ("layers", None),
)

LogicalAxisRules = Sequence[tuple[str, str | Sequence[str] | None]]


def make_mesh(mesh_shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the ("data", "fsdp", "tensor") mesh; one entry of `mesh_shape` may be -1 to fill."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_shape, len(devices))
    # Auto axis types keep flax linen's sharding annotations meaningful; jax.make_mesh would
    # otherwise default to Explicit axes on recent jax versions.
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def mesh_and_rules(
    mesh_shape: Sequence[int], logical_axis_rules: LogicalAxisRules = ()
) -> tuple[Mesh, tuple]:
    """The config's mesh and rules; empty rules mean DEFAULT_LOGICAL_AXIS_RULES."""
    rules = tuple(tuple(rule) for rule in logical_axis_rules) or DEFAULT_LOGICAL_AXIS_RULES
    return make_mesh(tuple(mesh_shape)), rules


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: LogicalAxisRules) -> Iterator[None]:
    """The mesh and logical-axis-rules context under which the models' activation constraints bind.

    Outside it `nn.with_logical_constraint` is a no-op and activation layouts are left to the
    compiler's propagation; inside it every constrained activation gets the layout the rules give.
    """
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(tuple(rules)):
        yield


def traced_in_context(fn: Callable, mesh: Mesh, rules: LogicalAxisRules) -> Callable:
    """`fn` entering `sharding_context(mesh, rules)` whenever it runs, so also when jit traces it."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with sharding_context(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def resolve_mesh_shape(mesh_shape: Sequence[int], device_count: int) -> tuple[int, ...]:
    """Replaces the single -1 of `mesh_shape` so that the product equals `device_count`."""
    shape = tuple(int(size) for size in mesh_shape)
    if len(shape) != len(MESH_AXES):
        raise UserError(f"mesh_shape {shape} must have one size per mesh axis {MESH_AXES}.")
    if any(size == 0 or size < -1 for size in shape):
        raise UserError(f"mesh_shape {shape} may only hold positive sizes and at most one -1.")
    fill_positions = [index for index, size in enumerate(shape) if size == -1]
    if len(fill_positions) > 1:
        raise UserError(
            f"mesh_shape {shape} has {len(fill_positions)} entries of -1; at most one is allowed."
        )
    fixed_product = math.prod(size for size in shape if size != -1)
    if fill_positions:
        if device_count % fixed_product:
            raise UserError(
                f"mesh_shape {shape}: {device_count} devices do not divide by the fixed sizes' product "
                f"{fixed_product}, so -1 cannot fill the remaining devices."
            )
        shape = tuple(device_count // fixed_product if size == -1 else size for size in shape)
    elif fixed_product != device_count:
        raise UserError(
            f"mesh_shape {shape} needs {fixed_product} devices but {device_count} are available."
        )
    return shape


def _is_partitioned(leaf: Any) -> bool:
    return isinstance(leaf, nn.Partitioned)


def _logical_names_in(abstract_tree: Any) -> set[str]:
    names: set[str] = set()
    for leaf in jax.tree_util.tree_leaves(abstract_tree, is_leaf=_is_partitioned):
        if isinstance(leaf, nn.LogicallyPartitioned):
            names.update(name for name in leaf.names if isinstance(name, str))
    return names


def _check_rules(abstract_tree: Any, mesh: Mesh, rules: LogicalAxisRules) -> None:
    """Rejects rules that would silently replicate: unknown logical names or unknown mesh axes."""
    for logical_name, mesh_axes in rules:
        targets = () if mesh_axes is None else (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes
        unknown_axes = [axis for axis in targets if axis not in mesh.axis_names]
        if unknown_axes:
            raise UserError(
                f"Logical axis rule {logical_name!r} -> {mesh_axes!r} names mesh axes {unknown_axes} "
                f"that the mesh {mesh.axis_names} does not have."
            )
    ruled_names = {logical_name for logical_name, _ in rules}
    unruled_names = sorted(_logical_names_in(abstract_tree) - ruled_names)
    if unruled_names:
        raise UserError(
            f"Logical axis names {unruled_names} are used by the model but have no rule in "
            f"logical_axis_rules (known: {sorted(ruled_names)}); add a rule, with None to replicate."
        )


def logical_to_mesh_shardings(abstract_tree: Any, mesh: Mesh, rules: LogicalAxisRules) -> Any:
    """Maps an abstract (eval_shape) tree to NamedShardings, one per leaf of the unboxed tree.

    Leaves boxed by `nn.with_logical_partitioning` are sharded by `rules`; plain leaves (optimizer
    step counts, rng keys, unannotated params) are replicated. Optimizer moments created by optax
    from boxed params keep the boxes and hence the params' shardings.
    """
    rules = tuple(rules)
    _check_rules(abstract_tree, mesh, rules)
    logical_specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def with_shardings(abstract_tree: Any, shardings: Any) -> Any:
    """Attaches `shardings` to an unboxed abstract tree: the target for restoring onto `mesh`."""
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        nn.unbox(abstract_tree),
        shardings,
    )


def abstract_sharded_state(
    init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh, rules: LogicalAxisRules
) -> tuple[Any, Any]:
    """Shapes, dtypes and shardings of `init_fn(rng)` without computing it.

    Returns (abstract unboxed state whose leaves carry their sharding, tree of shardings). The
    first is what a checkpoint restores onto.
    """
    boxed_abstract = jax.eval_shape(init_fn, rng)
    shardings = logical_to_mesh_shardings(boxed_abstract, mesh, rules)
    return with_shardings(boxed_abstract, shardings), shardings


def create_sharded(
    init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh, rules: LogicalAxisRules
) -> tuple[Any, Any]:
    """Runs `init_fn(rng)` with every output created directly in its sharding, boxes removed.

    No device ever holds an unsharded copy of the state, so models larger than one device's
    memory initialise. Returns (state, shardings); the shardings serve as the train step's
    in/out shardings. `init_fn` is traced twice, so build the optimizer once outside it: a
    TrainState's `tx` is static metadata and two different objects make the trees disagree.
    """
    _, shardings = abstract_sharded_state(init_fn, rng, mesh, rules)
    state = jax.jit(lambda key: nn.unbox(init_fn(key)), out_shardings=shardings)(rng)
    return state, shardings


def describe_shardings(shardings: Any) -> Iterable[str]:
    """One line per leaf, "path: PartitionSpec", for logging the layout at start-up."""
    flat, _ = jax.tree_util.tree_flatten_with_path(shardings)
    for path, sharding in flat:
        yield f"{jax.tree_util.keystr(path)}: {sharding.spec}"
