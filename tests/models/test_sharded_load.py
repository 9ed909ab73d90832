"""Params placed on 8 fake CPU devices with fsdp/tensor sharding give the single-device logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from dpo_jax.models import abstract_params, from_hf
from tests.models.conftest import VOCAB, make_hf_model

RULES = (
    ("activation_batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "gptj"])
@pytest.mark.parametrize("mesh_shape", [(1, 2, 4), (2, 4, 1)])
def test_sharded_params_give_single_device_logits(tmp_path, arch, mesh_shape):
    make_hf_model(arch).save_pretrained(tmp_path / "hf")
    model, host_params = from_hf(str(tmp_path / "hf"))
    mesh = Mesh(np.array(jax.devices()).reshape(mesh_shape), ("data", "fsdp", "tensor"))
    specs = nn.get_partition_spec(abstract_params(model, boxed=True))
    shardings = nn.logical_to_mesh_sharding(specs, mesh, RULES)
    _, params = from_hf(str(tmp_path / "hf"), shardings=shardings)
    wte = params["embed_in"]["embedding"] if arch == "gpt_neox" else params["wte"]["embedding"]
    assert len(wte.sharding.device_set) == 8 and not wte.sharding.is_fully_replicated

    ids = jnp.asarray(np.random.RandomState(0).randint(1, VOCAB, (4, 10)).astype(np.int32))
    with mesh, nn.logical_axis_rules(RULES):
        sharded = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, ids)
    single = model.apply({"params": host_params}, ids)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-5, rtol=0)
