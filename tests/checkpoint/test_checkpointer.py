import os
import signal
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.experimental import multihost_utils

from dpo_jax import checkpoint, sharding
from dpo_jax.run import optim
from dpo_jax.run.state import TrainState
from tests.train_helpers import free_port, run_worker_processes

RULES = sharding.DEFAULT_LOGICAL_AXIS_RULES
OPTIMIZER, _ = optim.make_optimizer(
    ml_collections.ConfigDict(
        dict(
            optimizer="adamw",
            learning_rate=1e-2,
            warmup_steps=0,
            lr_schedule="constant",
            total_steps=10,
            weight_decay=0.1,
            adam_b1=0.9,
            adam_b2=0.999,
            adam_eps=1e-8,
            max_grad_norm=1.0,
        )
    )
)


def make_init_fn(mlp_size=8):
    def init_fn(rng):
        embed_key, mlp_key = jax.random.split(rng)
        params = {
            "embedding": nn.LogicallyPartitioned(jax.random.normal(embed_key, (16, 8)), ("vocab", "embed")),
            "mlp": {
                "kernel": nn.LogicallyPartitioned(
                    jax.random.normal(mlp_key, (8, mlp_size)), ("embed", "mlp")
                ),
                "bias": nn.LogicallyPartitioned(jnp.zeros((mlp_size,)), ("mlp",)),
            },
        }
        return TrainState.create(params=params, tx=OPTIMIZER, rng=rng)

    return init_fn


def trained_state(mesh):
    """A state whose optimizer moments are non-zero, so the round trip checks real values."""
    state, shardings = sharding.create_sharded(make_init_fn(), jax.random.PRNGKey(0), mesh, RULES)
    grads = jax.tree_util.tree_map(lambda param: jnp.full_like(param, 0.3), state.params)
    return jax.jit(TrainState.apply_gradients, out_shardings=shardings)(state, grads)


@pytest.fixture(scope="module")
def state():
    return trained_state(sharding.make_mesh((8, 1, 1)))


def restore_target(mesh, mlp_size=8):
    abstract, _ = sharding.abstract_sharded_state(make_init_fn(mlp_size), jax.random.PRNGKey(0), mesh, RULES)
    return abstract


def test_round_trip_restores_onto_other_meshes_bitwise(tmp_path):
    saved = trained_state(sharding.make_mesh((4, 2, 1)))
    with checkpoint.Checkpointer(tmp_path / "ckpt", save_every_steps=1, keep=2) as checkpointer:
        assert checkpointer.save(1, saved, data_position={"next_index": 64})
        checkpointer.wait_until_finished()
        target_meshes = [
            sharding.make_mesh((2, 1, 4)),
            sharding.make_mesh((8, 1, 1)),
            sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1]),
        ]
        for mesh in target_meshes:
            target = restore_target(mesh)
            restored, data_position = checkpointer.restore(None, target)
            assert data_position == {"next_index": 64}
            assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(saved)
            for got, want, wanted in zip(
                jax.tree_util.tree_leaves(restored),
                jax.tree_util.tree_leaves(saved),
                jax.tree_util.tree_leaves(target),
            ):
                assert got.sharding == wanted.sharding
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert len(restored.params["mlp"]["kernel"].sharding.device_set) == 1


def test_only_large_replicated_arrays_are_copied_in_slices_from_each_replica(tmp_path, state, monkeypatch):
    """Orbax's replica-parallel save copies 1/8 of an array from each of its 8 replicas; below
    REPLICA_PARALLEL_MIN_SLICE_BYTES a slice costs more than it shares, so a small array is copied once.
    Checkpoints written either way restore the other way, bitwise."""
    import orbax.checkpoint as ocp

    from dpo_jax.checkpoint.checkpointer import REPLICA_PARALLEL_MIN_SLICE_BYTES

    leaves = jax.tree_util.tree_leaves(state)
    assert all(
        leaf.sharding.is_fully_replicated and leaf.nbytes < REPLICA_PARALLEL_MIN_SLICE_BYTES
        for leaf in leaves
    )
    big = jax.device_put(
        jnp.arange(2 * REPLICA_PARALLEL_MIN_SLICE_BYTES, dtype=jnp.float32), leaves[0].sharding
    )  # 8 MiB: 8 slices of 1 MiB
    copies = []
    array_type = type(leaves[0])
    copy = array_type.copy_to_host_async
    monkeypatch.setattr(
        array_type, "copy_to_host_async", lambda self: (copies.append(self.nbytes), copy(self))[1]
    )
    with checkpoint.Checkpointer(tmp_path / "ours", save_every_steps=1, keep=2, async_save=False) as ours:
        ours.save(1, state, data_position=1)
        assert len(copies) == len(leaves)
        copies.clear()
        ours.save(2, {"big": big}, data_position=2)
        assert copies == [REPLICA_PARALLEL_MIN_SLICE_BYTES] * 8
    ours_handler = ocp.type_handlers.get_type_handler(jax.Array)
    try:  # the same state saved the way Orbax's default handler saves it, then restored by ours
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=True), override=True
        )
        copies.clear()
        parallel_saver = ocp.CheckpointManager(tmp_path / "parallel", item_names=("state", "data"))
        data = {"data_position": 1, "model_signature": checkpoint.model_signature(state), "metadata": {}}
        parallel_saver.save(
            1,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)),
            force=True,
        )
        parallel_saver.wait_until_finished()
        parallel_saver.close()
        assert len(copies) > 4 * len(leaves)
        default_reader = ocp.CheckpointManager(tmp_path / "ours", item_names=("state",))
        from_ours = default_reader.restore(1, args=ocp.args.Composite(state=ocp.args.StandardRestore(state)))[
            "state"
        ]
        default_reader.close()
    finally:
        ocp.type_handlers.register_type_handler(jax.Array, ours_handler, override=True)
    with checkpoint.Checkpointer(tmp_path / "parallel", save_every_steps=1, keep=1) as reader:
        from_parallel, _ = reader.restore(1, restore_target(sharding.make_mesh((8, 1, 1))))
    for restored in (from_ours, from_parallel):
        for got, want in zip(jax.tree_util.tree_leaves(restored), leaves):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_keeps_the_latest_n_and_saves_on_the_cadence(tmp_path, state):
    with checkpoint.Checkpointer(tmp_path, save_every_steps=2, keep=2, async_save=False) as checkpointer:
        assert checkpointer.latest_step() is None
        saved_steps = [step for step in range(1, 7) if checkpointer.save(step, state, data_position=step)]
        assert saved_steps == [2, 4, 6]
        assert checkpointer.all_steps() == [4, 6]
        assert checkpointer.save(7, state, data_position=7, force=True)
        assert not checkpointer.save(7, state, data_position=7, force=True)
        assert checkpointer.all_steps() == [6, 7]
        assert checkpointer.latest_step() == 7


def test_data_item_round_trips_with_signature_and_metadata(tmp_path, state):
    position = {"epoch": 1, "next_index": 128, "order_seed": 7}
    with checkpoint.Checkpointer(tmp_path, save_every_steps=1, keep=1) as checkpointer:
        checkpointer.save(3, state, position, metadata={"config": "tldr:tiny"})
        checkpointer.wait_until_finished()
        data_item = checkpointer.read_data_item()
    assert data_item["data_position"] == position
    assert data_item["metadata"] == {"config": "tldr:tiny"}
    assert data_item["model_signature"]["mlp/kernel"] == [8, 8]
    with checkpoint.Checkpointer(tmp_path, save_every_steps=1, keep=1) as reopened:
        assert reopened.latest_step() == 3
        _, restored_position = reopened.restore(3, restore_target(sharding.make_mesh((8, 1, 1))))
    assert restored_position == position


def test_restoring_a_different_model_names_the_tensor(tmp_path, state):
    with checkpoint.Checkpointer(tmp_path, save_every_steps=1, keep=1, async_save=False) as checkpointer:
        checkpointer.save(1, state, data_position=0)
        wrong_target = restore_target(sharding.make_mesh((8, 1, 1)), mlp_size=4)
        with pytest.raises(
            ValueError, match=r"mlp/kernel: checkpoint shape \(8, 8\) != model shape \(8, 4\)"
        ):
            checkpointer.restore(1, wrong_target)
        with pytest.raises(FileNotFoundError, match="step 5"):
            checkpointer.restore(5, wrong_target)


def test_non_json_data_position_is_rejected_at_save(tmp_path, state):
    with checkpoint.Checkpointer(tmp_path, save_every_steps=1, keep=1) as checkpointer:
        with pytest.raises(TypeError, match="JSON-serialisable"):
            checkpointer.save(1, state, data_position={"index": object()})


def test_unwritable_directory_fails_at_construction_naming_the_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    bad_directory = blocker / "checkpoints"
    with pytest.raises(PermissionError, match=str(bad_directory)):
        checkpoint.Checkpointer(bad_directory, save_every_steps=1, keep=1)


def test_sigterm_raises_the_preemption_flag():
    previous = checkpoint.install_preemption_handler()
    try:
        assert not checkpoint.preemption_requested()
        assert not checkpoint.should_stop_for_preemption(step=1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert checkpoint.preemption_requested()
        assert checkpoint.should_stop_for_preemption(step=2)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert signal.getsignal(signal.SIGTERM) == previous[signal.SIGTERM]


def two_process_worker(process_id: int, port: int, handler_installed: str) -> None:
    """One of two CPU processes (2 devices each) joined by jax.distributed; prints what it observed."""
    if handler_installed == "before_initialize":
        checkpoint.install_preemption_handler()
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    if handler_installed == "after_initialize":
        checkpoint.install_preemption_handler()
    mesh = sharding.make_mesh((-1, 1, 1))
    batch = sharding.make_global_batch({"tokens": np.full((2, 3), process_id, np.int32)}, mesh)
    print("global_shape", batch["tokens"].shape)
    gathered = np.asarray(multihost_utils.process_allgather(batch["tokens"], tiled=True))
    print("rows", sorted(int(row) for row in gathered[:, 0]))
    try:
        sharding.make_global_batch({"tokens": np.zeros((1, 3), np.int32)}, mesh)
    except ValueError as error:
        print("batch_error", error)
    for step in range(1, 1000):
        if process_id == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        if checkpoint.should_stop_for_preemption(step, check_every_steps=4):
            print(f"stopped_at {step}", flush=True)
            return
        time.sleep(0.02)
    print("never stopped")


def run_two_processes(handler_installed: str) -> list[str]:
    return run_worker_processes(__file__, [str(free_port()), handler_installed], devices=2, timeout=300)


@pytest.mark.slow
def test_two_processes_build_one_global_batch_and_stop_together_when_one_is_preempted():
    for output in run_two_processes("after_initialize"):
        assert "global_shape (4, 3)" in output
        assert "rows [0, 0, 1, 1]" in output
        assert "global batch of 2 rows (1 per process x 2 processes)" in output
        # Process 1 is signalled at step 3; both stop at the next checked step.
        assert "stopped_at 4" in output


@pytest.mark.slow
def test_preemption_still_stops_both_when_jax_replaced_the_handler():
    stopped_at = [
        line
        for output in run_two_processes("before_initialize")
        for line in output.splitlines()
        if line.startswith("stopped_at")
    ]
    assert len(stopped_at) == 2 and stopped_at[0] == stopped_at[1], stopped_at


if __name__ == "__main__":
    two_process_worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
