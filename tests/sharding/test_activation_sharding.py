"""The compiled train step on 8 fake CPU devices lays out what the rules say, and moves only parameters.

The trainer traces its steps inside the mesh and the logical-axis rules, so the models' activation
constraints bind (before, they were silently inert). Checked on the optimised HLO of the real train
step for an FSDP mesh and a tensor-parallel mesh: parameters arrive sharded as the rules map them,
no collective carries the batch (no array with the sequence axis is all-gathered, no all-to-all),
and only the collectives each layout needs appear.
"""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from configs.hh import get_config
from dpo_jax.models import build_model
from dpo_jax.models.loading import describe_model
from dpo_jax.perf.aot import build_programs
from dpo_jax.perf.hlo import array_dims, collective_result_types, summarize_hlo
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, make_mesh
from dpo_jax.training.step import make_apply_fn, make_train_step

SEQ = 40  # a length no parameter dimension has: any all-gathered array with it is an activation
PAIRS = 24


def _config():
    config = get_config("tiny")
    config.data.max_length = SEQ
    config.global_batch_size = PAIRS
    return config


@pytest.fixture(scope="module", params=[(1, 8, 1), (2, 1, 4)], ids=["fsdp8", "data2_tensor4"])
def compiled(request):
    mesh = make_mesh(request.param)
    train = build_programs(_config(), mesh, DEFAULT_LOGICAL_AXIS_RULES)[0][0]
    lowered = train.jitted.lower(*train.args)
    return request.param, train, lowered, lowered.compile()


def _param_spec(compiled_step, *path):
    state_shardings = compiled_step.input_shardings[0][0]
    leaf = state_shardings.params
    for key in path:
        leaf = leaf[key]
    return leaf.spec


def test_activation_constraints_bind_only_inside_the_context(compiled):
    _, train, lowered, _ = compiled
    # Hidden states after every block, the logits, the embedding tables' lookups.
    assert lowered.as_text().count("sharding_constraint") >= 5
    config = _config()
    model = build_model(describe_model(config.model, param_dtype=config.model.param_dtype))
    context_free = jax.jit(make_train_step(make_apply_fn(model), config, has_reference=True))
    assert "sharding_constraint" not in context_free.lower(*train.args).as_text()


def test_parameters_are_sharded_as_the_rules_say(compiled):
    mesh_shape, _, _, step = compiled
    # ("embed", "mlp") -> ("fsdp", "tensor"); ("vocab", "embed") -> ("tensor", "fsdp").
    assert _param_spec(step, "h", "layers_0", "mlp", "c_fc", "kernel") == P("fsdp", "tensor")
    assert _param_spec(step, "wte", "embedding") == P("tensor", "fsdp")
    shard_shape = (
        step.input_shardings[0][0].params["h"]["layers_0"]["mlp"]["c_fc"]["kernel"].shard_shape((64, 256))
    )
    assert shard_shape == (64 // mesh_shape[1], 256 // mesh_shape[2])


def test_only_parameters_travel(compiled):
    mesh_shape, _, _, step = compiled
    hlo = step.as_text()
    kinds = set(summarize_hlo(hlo)["collectives"])
    for result_type in collective_result_types(hlo, "all-gather"):
        for dtype, dims in array_dims(result_type):
            assert SEQ not in dims and dtype.startswith("f"), (
                f"an activation or the batch is all-gathered: {result_type}"
            )
    assert "all-to-all" not in kinds and "collective-permute" not in kinds
    if mesh_shape == (1, 8, 1):
        # FSDP: gather weights for the forward and backward, reduce gradients (all-reduce on CPU,
        # reduce-scatter on TPU), reduce the metrics.
        assert {"all-gather", "all-reduce"} <= kinds <= {"all-gather", "all-reduce", "reduce-scatter"}
    else:
        # Tensor parallel: partial sums of row-parallel matmuls and the vocabulary-sharded
        # log-sum-exp are all-reduced; no weight or activation is gathered.
        assert kinds == {"all-reduce"}
