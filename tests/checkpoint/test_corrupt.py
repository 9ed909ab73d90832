"""Damaged checkpoints: restore falls back to the newest readable step, names the bad ones, deletes nothing."""

import asyncio
import gc
import logging
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import SingleDeviceSharding

from dpo_jax import UserError, checkpoint, sharding
from tests.checkpoint.test_checkpointer import restore_target, trained_state


def _save_steps(directory, steps):
    state = trained_state(sharding.make_mesh((8, 1, 1)))
    with checkpoint.Checkpointer(directory, save_every_steps=1, keep=10, async_save=False) as checkpointer:
        for step in steps:
            checkpointer.save(step, state, data_position={"step": step})


def truncate_array_files(step_dir: Path) -> None:
    """Halves every array data file: what a disk filling up mid-write leaves."""
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_falls_back_past_damaged_steps_then_says_when_none_is_readable(tmp_path, caplog):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1, 2, 3, 4])
    truncate_array_files(directory / "4")
    for path in (directory / "3" / "data").iterdir():  # a missing data item
        path.unlink()
    (directory / "3" / "data").rmdir()
    (directory / "5.orbax-checkpoint-tmp-123").mkdir()  # a crash mid-save
    target = restore_target(sharding.make_mesh((8, 1, 1)))
    with caplog.at_level(logging.WARNING, logger="dpo_jax"):
        with checkpoint.Checkpointer(directory, save_every_steps=1, keep=10) as checkpointer:
            step, _, data_item = checkpointer.restore_latest_readable(target)
            assert step == 2 and data_item["data_position"] == {"step": 2}
            assert checkpointer.all_steps() == [1, 2]
    assert "5.orbax-checkpoint-tmp-123" in caplog.text
    assert not (directory / "5.orbax-checkpoint-tmp-123").exists()
    for bad in (3, 4):
        assert f"checkpoint step {bad} in {directory} is unreadable" in caplog.text
        assert (tmp_path / "checkpoints_unreadable" / str(bad)).is_dir()  # set aside, not deleted

    for step in (1, 2):
        truncate_array_files(directory / str(step))
    with checkpoint.Checkpointer(directory, save_every_steps=1, keep=10) as checkpointer:
        with pytest.raises(UserError, match=r"no checkpoint in .* is readable.*\n  step 2: .*\n  step 1: "):
            checkpointer.restore_latest_readable(target)
        assert checkpointer.restore_latest_readable(target) is None  # all set aside: a fresh start


def test_a_different_model_is_not_mistaken_for_damage(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1])
    wrong_target = restore_target(sharding.make_mesh((8, 1, 1)), mlp_size=4)
    with checkpoint.Checkpointer(directory, save_every_steps=1, keep=10) as checkpointer:
        with pytest.raises(UserError, match="different model"):
            checkpointer.restore_latest_readable(wrong_target)
        assert checkpointer.all_steps() == [1]


def test_a_reader_restores_a_params_subtree_and_moves_nothing(tmp_path, caplog):
    """`Checkpointer.reader` + `params_path`: what a sampler uses on a run that may still be training."""
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1, 2])
    truncate_array_files(directory / "2")
    (directory / "3.orbax-checkpoint-tmp-7").mkdir()  # a save in flight
    mlp = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(
            leaf.shape, leaf.dtype, sharding=SingleDeviceSharding(jax.devices()[1])
        ),
        restore_target(sharding.make_mesh((8, 1, 1))).params["mlp"],
    )
    with caplog.at_level(logging.WARNING, logger="dpo_jax"):
        with checkpoint.Checkpointer.reader(directory) as reader:
            step, params, _ = reader.restore_latest_readable(mlp, params_path=("mlp",))
            with pytest.raises(RuntimeError, match="read-only"):
                reader.save(5, params, data_position={})
    assert step == 1 and set(params) == {"kernel", "bias"}
    expected = trained_state(sharding.make_mesh((8, 1, 1))).params["mlp"]
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(np.asarray(params[name]), np.asarray(expected[name]))
        assert params[name].devices() == {jax.devices()[1]}
    assert "checkpoint step 2 in" in caplog.text and "skipped, left in place" in caplog.text
    assert (directory / "2").is_dir() and (directory / "3.orbax-checkpoint-tmp-7").is_dir()
    assert not (tmp_path / "checkpoints_unreadable").exists()

    wrong = {
        "kernel": jax.ShapeDtypeStruct((8, 4), np.float32),
        "bias": jax.ShapeDtypeStruct((4,), np.float32),
    }
    with checkpoint.Checkpointer.reader(directory) as reader:
        with pytest.raises(
            UserError, match=r"different model:\n  bias: checkpoint shape \(8,\) != model shape"
        ):
            reader.restore_latest_readable(wrong, params_path=("mlp",))
    with pytest.raises(UserError, match="no checkpoint directory"):
        checkpoint.Checkpointer.reader(tmp_path / "absent")


def _restore_that_abandons_a_failed_read(*args, **kwargs):
    """Orbax's restore of a damaged step when the timing is bad: its first failing read ends it, and a
    second read fails as it unwinds, too late for asyncio.gather to retrieve that error before the
    event loop is closed (what an AVX-512 CI machine saw)."""

    def failure(name):
        return ValueError(f'OUT_OF_RANGE: Error opening "cast" driver: {name}/.zarray')

    async def restore():
        second_read = asyncio.get_running_loop().create_future()

        async def read_first():
            raise failure("params.wte.embedding")

        try:
            await asyncio.gather(read_first(), second_read)
        finally:  # it lands after the restore has failed: the loop stops before gather looks at it
            asyncio.get_running_loop().call_soon(second_read.set_exception, failure("params.ln_f.scale"))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(restore())
    finally:
        loop.close()


def test_a_damaged_steps_abandoned_reads_stay_quiet_whatever_the_timing(tmp_path, caplog, monkeypatch):
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1])
    monkeypatch.setattr(checkpoint.Checkpointer, "restore", _restore_that_abandons_a_failed_read)
    with caplog.at_level(logging.WARNING):
        with checkpoint.Checkpointer.reader(directory) as reader:
            with pytest.raises(UserError, match="params.wte.embedding"):
                reader.restore_latest_readable(restore_target(sharding.make_mesh((8, 1, 1))))
        gc.collect()  # when the abandoned task would report its error
    assert "checkpoint step 1 in" in caplog.text
    assert "never retrieved" not in caplog.text and "ln_f" not in caplog.text


def test_a_save_cut_short_by_a_crash_is_reported_and_removed_under_orbaxs_own_naming(
    tmp_path, caplog, monkeypatch
):
    """The unfinished directory comes from Orbax itself (its rename never happens), not from a name
    written here: Orbax 0.12.8 calls it "<step>.orbax-checkpoint-tmp", older releases add "-<n>"."""
    directory = tmp_path / "checkpoints"
    _save_steps(directory, [1])

    async def crash_before_the_rename(self, *args, **kwargs):
        raise OSError("killed before the checkpoint was finalised")

    with monkeypatch.context() as patch:
        patch.setattr(ocp.path.atomicity.AtomicRenameTemporaryPath, "finalize", crash_before_the_rename)
        with pytest.raises(OSError, match="killed"):
            _save_steps(directory, [2])
    unfinished = sorted(p.name for p in directory.iterdir() if not p.name.isdigit() and p.is_dir())
    assert len(unfinished) == 1 and unfinished[0].startswith("2."), unfinished
    with caplog.at_level(logging.WARNING, logger="dpo_jax"):
        with checkpoint.Checkpointer(
            directory, save_every_steps=1, keep=10, async_save=False
        ) as checkpointer:
            assert checkpointer.all_steps() == [1]
            # Orbax removes it in the background and waits for that before the next save.
            checkpointer.save(2, trained_state(sharding.make_mesh((8, 1, 1))), data_position={"step": 2})
    assert (
        f"removing 1 unfinished checkpoint(s) left by a crash in {directory}: {unfinished[0]}" in caplog.text
    )
    assert sorted(p.name for p in directory.iterdir()) == ["1", "2"]
