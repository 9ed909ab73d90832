"""Precomputed reference log-probs land on their own examples whatever the device order.

On a multi-host mesh a process's devices need not be contiguous in the global batch, so global row j
of a batch is not example j. The pass places every result by the batch's `example_index`. Checked on
a permuted device mesh, with rows deliberately scattered across the global batch, and on two real
processes (jax.distributed on 127.0.0.1, 4 fake CPU devices each) whose devices interleave in the
mesh, against a plain host computation per example.
"""

import json
import sys

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
from tests.train_helpers import free_port, run_worker_processes

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
    step = passes.jit_reference_logps_step(
        apply_fn, mesh, DEFAULT_LOGICAL_AXIS_RULES, length_normalize=config.length_normalize
    )
    out = passes.precompute_reference_logps(prepared, step, reference, config, mesh, BATCH)
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


def two_process_worker(process_id: int, port: int, out_dir: str) -> None:
    """One of two processes (4 CPU devices each) on a mesh [p0d0, p1d0, p0d1, p1d1, ...].

    Precomputes the reference log-probs with padded and with shared-prompt packed rows, saves them,
    then runs one train step that reads the packed ones. Prints the global rows it holds and the step's
    metrics.
    """
    from dpo_jax.data.packing import layout_from_config
    from dpo_jax.metrics import metrics_to_floats
    from dpo_jax.run.optim import make_optimizer
    from dpo_jax.run.state import create_train_state, place_reference
    from dpo_jax.sharding import batch_sharding, gather_to_host
    from dpo_jax.training.step import jit_train_step

    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    config = get_config("tiny,precompute")
    prepared = data_lib.build_datasets(
        config.data, data_lib.load_tokenizer("tiny"), stage="dpo", cache_dir=f"{out_dir}/cache{process_id}"
    )
    model, host_params = load_model(config.model, param_dtype="float32", seed=0)
    apply_fn = make_apply_fn(model)
    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(2)]
    mesh = make_mesh((1, 8, 1), devices=[d for pair in zip(*by_process) for d in pair])
    held = batch_sharding(mesh, 1).addressable_devices_indices_map((BATCH,)).values()
    print("held_rows", sorted(index[0].start for index in held), flush=True)

    tx, _ = make_optimizer(config)
    state, shardings, _ = create_train_state(model, host_params, tx, mesh, DEFAULT_LOGICAL_AXIS_RULES, seed=0)
    reference = place_reference(host_params, shardings.params, "float32")
    results = {}
    for name, share in (("padded", False), ("packed", True)):
        config.data.share_prompt = config.data.pack = share
        logps_step = passes.jit_reference_logps_step(
            apply_fn, mesh, DEFAULT_LOGICAL_AXIS_RULES, length_normalize=config.length_normalize
        )
        out = passes.precompute_reference_logps(prepared, logps_step, reference, config, mesh, BATCH)
        for split in ("train", "eval"):
            results[f"{name}_{split}"] = getattr(out, split).extras["reference_logps"]
    np.savez(f"{out_dir}/logps{process_id}.npz", **results)

    # One step reading the packed pass's log-probs. The policy starts as the reference, so every
    # example's implicit reward is 0 and the loss log 2 only if each got its own log-probs.
    loader = data_lib.make_train_loader(
        out,
        global_batch_size=BATCH,
        seed=0,
        process_index=process_id,
        process_count=2,
        layout=layout_from_config(config.data, row_multiple=8),
    )
    batch = make_global_batch(loader.batch(0), mesh)
    step = jit_train_step(
        apply_fn, config, shardings, batch, mesh, DEFAULT_LOGICAL_AXIS_RULES, has_reference=False
    )
    metrics = metrics_to_floats(gather_to_host(step(state, None, batch)[1]))
    print("metrics", json.dumps(metrics), flush=True)


@pytest.mark.slow
def test_two_processes_with_interleaved_devices(setup, tmp_path):
    outputs = run_worker_processes(__file__, [str(free_port()), str(tmp_path)], devices=4)
    # Each process's rows are every other global row: not a contiguous block.
    assert "held_rows [0, 2, 4, 6]" in outputs[0]
    assert "held_rows [1, 3, 5, 7]" in outputs[1]
    expected = setup[-1]
    for process_id in range(2):
        saved = np.load(tmp_path / f"logps{process_id}.npz")
        for key in saved.files:
            np.testing.assert_allclose(
                saved[key], expected[key.split("_")[1]], rtol=1e-5, atol=1e-5, err_msg=f"{process_id} {key}"
            )
    for output in outputs:
        line = next(line for line in output.splitlines() if line.startswith("metrics "))
        metrics = json.loads(line.removeprefix("metrics "))
        assert metrics["loss"] == pytest.approx(np.log(2.0), abs=1e-5), metrics
        assert abs(metrics["rewards/margins"]) < 1e-5, metrics


if __name__ == "__main__":
    two_process_worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
