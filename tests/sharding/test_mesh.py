import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from dpo_jax import sharding
from dpo_jax.run.state import TrainState

RULES = sharding.DEFAULT_LOGICAL_AXIS_RULES


class TinyBlock(nn.Module):
    """Params annotated like the real models: a (vocab, embed) table, an (embed, mlp) kernel, a norm."""

    @nn.compact
    def __call__(self, tokens):
        embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
            (16, 8),
        )
        hidden = nn.Dense(
            4,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
        )(embedding[tokens])
        return nn.LayerNorm(
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
        )(hidden)


# Built once: init is traced twice (eval_shape, then jit) and the optimizer is static pytree metadata,
# so both traces must see the very same object.
OPTIMIZER = optax.adamw(1e-3)


def init_train_state(rng):
    params = TinyBlock().init(rng, jnp.zeros((1, 3), jnp.int32))["params"]
    return TrainState.create(params=params, tx=OPTIMIZER, rng=rng)


@pytest.mark.parametrize(
    "requested, expected", [((-1, 1, 1), (8, 1, 1)), ((2, -1, 2), (2, 2, 2)), ((4, 2, 1), (4, 2, 1))]
)
def test_make_mesh_fills_the_minus_one(requested, expected):
    mesh = sharding.make_mesh(requested)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == expected
    assert all(axis_type == jax.sharding.AxisType.Auto for axis_type in mesh.axis_types)


def test_make_mesh_on_given_devices():
    mesh = sharding.make_mesh((-1, 1, 1), devices=jax.devices()[:2])
    assert tuple(mesh.shape.values()) == (2, 1, 1)


@pytest.mark.parametrize(
    "bad_shape, message",
    [
        ((3, 1, 1), r"\(3, 1, 1\) needs 3 devices but 8"),
        ((-1, -1, 1), "2 entries of -1"),
        ((-1, 3, 1), "8 devices do not divide"),
        ((8, 1), "one size per mesh axis"),
        ((8, 0, 1), "positive sizes"),
    ],
)
def test_make_mesh_rejects_shapes_that_do_not_fit(bad_shape, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(bad_shape)


def test_logical_to_mesh_shardings_follows_the_rules_and_replicates_plain_leaves():
    mesh = sharding.make_mesh((2, 2, 2))
    abstract = {
        "kernel": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((8, 4), jnp.float32), ("embed", "mlp")),
        "scan": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((3, 8), jnp.float32), ("layers", "embed")),
        "count": jax.ShapeDtypeStruct((), jnp.int32),
        "plain": jax.ShapeDtypeStruct((4, 4), jnp.float32),
    }
    shardings = sharding.logical_to_mesh_shardings(abstract, mesh, RULES)
    assert shardings["kernel"].spec == P("fsdp", "tensor")
    assert shardings["scan"].spec == P(None, "fsdp")
    assert shardings["count"].spec == P()
    assert shardings["plain"].spec == P()
    assert all(leaf.mesh == mesh for leaf in jax.tree_util.tree_leaves(shardings))


def test_logical_names_without_a_rule_are_an_error_not_silent_replication():
    mesh = sharding.make_mesh((8, 1, 1))
    abstract = {"w": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((8,), jnp.float32), ("embd",))}
    with pytest.raises(ValueError, match=r"\['embd'\]"):
        sharding.logical_to_mesh_shardings(abstract, mesh, RULES)


def test_rules_naming_a_missing_mesh_axis_are_rejected():
    mesh = sharding.make_mesh((8, 1, 1))
    with pytest.raises(ValueError, match="'model'"):
        sharding.logical_to_mesh_shardings({}, mesh, (("embed", "model"),))


def test_create_sharded_builds_the_state_already_sharded_and_unboxed():
    mesh = sharding.make_mesh((2, 2, 2))
    rng = jax.random.PRNGKey(0)
    state, shardings = sharding.create_sharded(init_train_state, rng, mesh, RULES)

    boxed = jax.tree_util.tree_leaves(state, is_leaf=lambda leaf: isinstance(leaf, nn.Partitioned))
    assert not any(isinstance(leaf, nn.Partitioned) for leaf in boxed)
    assert state.params["embedding"].sharding.spec == P("tensor", "fsdp")
    assert state.params["Dense_0"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert state.params["LayerNorm_0"]["scale"].sharding.spec == P(None)
    adam_state = state.opt_state[0]
    assert adam_state.mu["Dense_0"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert adam_state.count.sharding.spec == P()
    assert state.step.sharding.spec == P()
    for leaf, expected in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(shardings)):
        assert leaf.sharding == expected

    unsharded = nn.unbox(init_train_state(rng))
    np.testing.assert_array_equal(state.params["embedding"], unsharded.params["embedding"])


def test_abstract_sharded_state_carries_shardings_without_computing():
    mesh = sharding.make_mesh((4, 2, 1))
    abstract, shardings = sharding.abstract_sharded_state(
        init_train_state, jax.random.PRNGKey(0), mesh, RULES
    )
    kernel = abstract.params["Dense_0"]["kernel"]
    assert isinstance(kernel, jax.ShapeDtypeStruct)
    assert kernel.shape == (8, 4)
    assert kernel.sharding == shardings.params["Dense_0"]["kernel"]
    lines = list(sharding.describe_shardings(shardings))
    assert any("Dense_0" in line and "fsdp" in line for line in lines)


def test_batch_sharding_splits_rows_over_data_and_fsdp():
    mesh = sharding.make_mesh((4, 2, 1))
    assert sharding.batch_sharding(mesh, 3).spec == P(("data", "fsdp"), None, None)
    assert sharding.data_parallel_size(mesh) == 8
    assert sharding.data_parallel_size(sharding.make_mesh((2, 1, 4))) == 2


def test_make_global_batch_builds_sharded_global_arrays():
    mesh = sharding.make_mesh((4, 2, 1))
    local = {
        "chosen_tokens": np.arange(16 * 5, dtype=np.int32).reshape(16, 5),
        "weights": np.ones(16, np.float32),
    }
    batch = sharding.make_global_batch(local, mesh)
    assert batch["chosen_tokens"].shape == (16, 5)
    assert batch["chosen_tokens"].sharding.spec == P(("data", "fsdp"), None)
    assert len(batch["chosen_tokens"].addressable_shards) == 8
    assert batch["chosen_tokens"].addressable_shards[0].data.shape == (2, 5)
    np.testing.assert_array_equal(batch["chosen_tokens"], local["chosen_tokens"])
    assert batch["weights"].shape == (16,)


def test_make_global_batch_refuses_a_batch_the_data_parallel_size_does_not_divide():
    mesh = sharding.make_mesh((4, 2, 1))
    with pytest.raises(ValueError, match=r"'chosen_tokens'.*12 rows.*data-parallel size 8"):
        sharding.make_global_batch({"chosen_tokens": np.zeros((12, 5), np.int32)}, mesh)
