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


def test_abstract_params_are_traced_once_per_model_and_given_fresh_containers(monkeypatch):
    """An evaluation asks for a model's abstract params at every checkpoint and temperature: the init is
    traced once per model (equal modules share it; another config traces its own), and each caller gets
    containers of its own, boxed or not."""
    import dataclasses

    from dpo_jax.models import build
    from dpo_jax.models.config import ModelConfig

    config = ModelConfig(
        arch="gpt2", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
        max_position_embeddings=32,
    )  # fmt: skip
    traced = []
    init_fn = build._init_fn
    monkeypatch.setattr(build, "_init_fn", lambda model: (traced.append(model.config), init_fn(model))[1])
    build._abstract_boxed_params.cache_clear()
    first, again = build.build_model(config), build.build_model(config)
    a, b = build.abstract_params(first, boxed=True), build.abstract_params(again, boxed=True)
    plain = build.abstract_params(again)
    assert traced == [config] and a is not b and a["wte"] is not b["wte"]
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert jax.tree_util.tree_leaves(plain) == jax.tree_util.tree_leaves(nn.meta.unbox(a))
    build.abstract_params(build.build_model(dataclasses.replace(config, num_layers=3)))
    assert len(traced) == 2
