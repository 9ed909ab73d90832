"""Precomputed reference log-probs land on their own examples whatever the device order.

On a multi-host mesh a process's devices need not be contiguous in the global batch, so global row j
of a batch is not example j. The pass places every result by the batch's `example_index`. Checked on
a permuted device mesh, and with rows deliberately scattered across the global batch (what a
non-process-ordered multi-host mesh does), against a plain host computation per example.
"""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs.hh import get_config
from dpo_jax import data as data_lib
from dpo_jax.evaluation import passes
from dpo_jax.models.loading import load_model
from dpo_jax.objectives import reference_logps
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, make_global_batch, make_mesh
from dpo_jax.training.step import make_apply_fn

BATCH = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = get_config("tiny,precompute")
    tokenizer = data_lib.load_tokenizer("tiny")
    prepared = data_lib.build_datasets(
        config.data, tokenizer, stage="dpo", cache_dir=str(tmp_path_factory.mktemp("cache"))
    )
    model, params = load_model(config.model, param_dtype="float32", seed=0)
    apply_fn = make_apply_fn(model)
    expected = {}
    for split in ("train", "eval"):
        batches = data_lib.make_eval_batches(
            prepared, global_batch_size=BATCH, process_index=0, process_count=1, split=split
        )
        rows = [np.asarray(reference_logps(params, b, apply_fn=apply_fn)) for b in batches]
        expected[split] = np.concatenate(rows)[: getattr(prepared, split).num_examples]
    return config, prepared, apply_fn, params, expected


def _precompute(setup, devices):
    config, prepared, apply_fn, params, expected = setup
    mesh = make_mesh((1, 8, 1), devices=devices)
    reference = jax.device_put(params, NamedSharding(mesh, P()))
    out = passes.precompute_reference_logps(
        prepared, apply_fn, reference, config, mesh, DEFAULT_LOGICAL_AXIS_RULES, BATCH
    )
    for split in ("train", "eval"):
        got = getattr(out, split).extras["reference_logps"]
        np.testing.assert_allclose(got, expected[split], rtol=1e-5, atol=1e-5)


def test_permuted_device_mesh(setup):
    devices = jax.devices()
    _precompute(setup, [devices[i] for i in (3, 6, 0, 5, 2, 7, 1, 4)])


def test_rows_scattered_across_the_global_batch(setup, monkeypatch):
    # What a mesh whose devices are not in process order does to per-process rows: global row j
    # holds another example. Placing results by global row would swap examples here.
    def scattered(local_batch, mesh):
        order = np.roll(np.arange(len(local_batch["example_mask"])), 3)
        return make_global_batch({k: np.asarray(v)[order] for k, v in local_batch.items()}, mesh)

    monkeypatch.setattr(passes, "make_global_batch", scattered)
    _precompute(setup, jax.devices())
