"""The policy of a workdir without an export: the newest readable checkpoint's params alone, laid out
for the sampler's decode program, with the run's model and tokenizer; a clear error naming both places when neither
exists."""

import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from dpo_jax import MissingInputError, UserError
from dpo_jax.analysis.saved_policy import load_saved_policy
from dpo_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer
from dpo_jax.models import build_model
from dpo_jax.models.loading import describe_model
from dpo_jax.ppo.model import POLICY, VALUE
from dpo_jax.run.state import TrainState, create_train_state
from dpo_jax.run.workdir import write_run_config
from dpo_jax.sharding import mesh_and_rules
from tests.checkpoint.test_corrupt import truncate_array_files
from tests.synthetic.tiny_models import random_params
from tests.train_helpers import tiny_config

STEPS = (2, 4)


@pytest.fixture(scope="module")
def unexported_run(tmp_path_factory):
    """A tiny DPO run's workdir as a run leaves it before its export: run_config.json and checkpoints of
    steps 2 and 4 (different params each), saved from an 8-device mesh with AdamW state."""
    workdir = tmp_path_factory.mktemp("unexported")
    config = tiny_config("hh", "tiny")
    model = build_model(describe_model(config.model, param_dtype=config.model.param_dtype))
    mesh, rules = mesh_and_rules(config.mesh_shape, config.logical_axis_rules)
    # std 0.5: next-token distributions peaked enough that greedy decoding does not hinge on rounding.
    params_at = {step: random_params(model, seed=step, std=0.5) for step in STEPS}
    with Checkpointer(workdir / CHECKPOINT_DIRNAME, save_every_steps=1, keep=5, async_save=False) as saver:
        for step, params in params_at.items():
            state, _, _ = create_train_state(model, params, optax.adamw(1e-3), mesh, rules, seed=0)
            saver.save(step, state, data_position={"step": step})
    write_run_config(workdir, config)
    return workdir, model, params_at


def assert_same_params(restored, expected):
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=jax.tree_util.keystr(path))


def test_the_newest_checkpoint_gives_the_policy_params_alone(unexported_run, caplog):
    workdir, model, params_at = unexported_run
    with caplog.at_level(logging.INFO, logger="dpo_jax"):
        policy = load_saved_policy(str(workdir))
    assert f"{workdir} has no export: sampling from its checkpoint at step 4" in caplog.text
    assert policy.model.config == model.config and policy.tokenizer == "tiny"
    assert jax.tree.structure(policy.params) == jax.tree.structure(params_at[4])
    assert_same_params(policy.params, params_at[4])
    # Laid out for decoding on the sampling mesh (all 8 devices on data): whole on every device, not
    # split over fsdp as the run saved them.
    for leaf in jax.tree.leaves(policy.params):
        assert leaf.sharding.is_fully_replicated and leaf.sharding.device_set == set(jax.devices())


def test_an_unreadable_newest_step_is_skipped_and_left_in_place(unexported_run, tmp_path, caplog):
    source, _, params_at = unexported_run
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    step_4 = workdir / CHECKPOINT_DIRNAME / "4"
    truncate_array_files(step_4)
    with caplog.at_level(logging.INFO, logger="dpo_jax"):
        policy = load_saved_policy(str(workdir))
    assert "step 4" in caplog.text and "skipped, left in place" in caplog.text
    assert "sampling from its checkpoint at step 2" in caplog.text
    assert_same_params(policy.params, params_at[2])
    assert step_4.is_dir() and not Path(str(workdir / CHECKPOINT_DIRNAME) + "_unreadable").exists()


def test_neither_an_export_nor_a_checkpoint_is_one_clear_error(unexported_run, tmp_path):
    looked_for = r"looked for an exported policy \(.*export/config.json\) and for a checkpoint \(.*checkpoints/<step>\)"
    with pytest.raises(MissingInputError, match=looked_for + "; found neither"):
        load_saved_policy(str(tmp_path))
    (tmp_path / CHECKPOINT_DIRNAME / "3.orbax-checkpoint-tmp-1").mkdir(parents=True)  # a crash mid-save
    with pytest.raises(MissingInputError, match=looked_for + "; found neither"):
        load_saved_policy(str(tmp_path))
    assert (tmp_path / CHECKPOINT_DIRNAME / "3.orbax-checkpoint-tmp-1").is_dir()  # a reader cleans nothing

    source, _, _ = unexported_run
    for step in STEPS:
        shutil.copytree(source / CHECKPOINT_DIRNAME / str(step), tmp_path / CHECKPOINT_DIRNAME / str(step))
        truncate_array_files(tmp_path / CHECKPOINT_DIRNAME / str(step))
    with pytest.raises(MissingInputError, match="no run_config.json"):
        load_saved_policy(str(tmp_path))
    shutil.copy(source / "run_config.json", tmp_path / "run_config.json")
    with pytest.raises(UserError, match=looked_for + r"; no checkpoint in .* is readable \(left in place\)"):
        load_saved_policy(str(tmp_path))


def test_a_ppo_workdir_gives_the_policy_half_of_its_params(unexported_run, tmp_path):
    source, model, params_at = unexported_run
    params = {POLICY: params_at[2], VALUE: {"head": {"kernel": np.ones((64, 1), np.float32)}}}
    with Checkpointer(tmp_path / CHECKPOINT_DIRNAME, save_every_steps=1, keep=1, async_save=False) as saver:
        saver.save(3, TrainState.create(params=params, tx=optax.sgd(0.1), rng=0), data_position={"step": 3})
    config = tiny_config("hh", "tiny")
    config.stage = "ppo"
    write_run_config(tmp_path, config)
    assert_same_params(load_saved_policy(str(tmp_path)).params, params_at[2])

    config.stage = "reward_model"
    write_run_config(tmp_path, config)
    with pytest.raises(UserError, match="stage='reward_model': not a language model to sample from"):
        load_saved_policy(str(tmp_path))


def test_policies_over_training_one_per_selected_checkpoint(unexported_run, tmp_path):
    """Issue 22 item 9: every kept checkpoint (or those at multiples of N) read in turn, read-only; a
    step that does not read is reported with its reason, not dropped."""
    from dpo_jax.analysis.over_training import parse_checkpoints
    from dpo_jax.analysis.saved_policy import policies_over_training

    source, model, params_at = unexported_run
    seen = list(policies_over_training(str(source), parse_checkpoints("all")))
    assert [step for step, _, _ in seen] == [2, 4] and all(not error for _, _, error in seen)
    for step, policy, _ in seen:
        assert policy.model.config == model.config and policy.source.endswith(f"{CHECKPOINT_DIRNAME}/{step}")
        assert_same_params(policy.params, params_at[step])
    assert [step for step, _, _ in policies_over_training(str(source), parse_checkpoints("every:4"))] == [4]
    with pytest.raises(
        MissingInputError, match=r"no checkpoint at a multiple of 3 steps \(saved: \[2, 4\]\)"
    ):
        list(policies_over_training(str(source), 3))
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    truncate_array_files(workdir / CHECKPOINT_DIRNAME / "2")
    (bad, none, reason), (good, policy, _) = policies_over_training(str(workdir), 1)
    assert (bad, none, good) == (2, None, 4) and reason and (workdir / CHECKPOINT_DIRNAME / "2").is_dir()
    assert_same_params(policy.params, params_at[4])
    for text in ("every:0", "some", "every:x"):
        with pytest.raises(UserError, match="expected final, all or every:N"):
            parse_checkpoints(text)
    assert parse_checkpoints("final") is None
