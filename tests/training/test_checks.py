"""Bad settings fail at start-up, naming the values: before any data is read or model built."""

import pytest

from dpo_jax.training.checks import validate_config
from dpo_jax.training.loop import train_and_evaluate
from tests.train_helpers import tiny_config


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"beta": 0.0}, "beta=0.0 must be a number > 0"),
        ({"label_smoothing": 0.5}, "label_smoothing=0.5"),
        ({"loss": "ipo", "label_smoothing": 0.1}, "ignored by loss 'ipo'"),
        ({"loss": "dpoo"}, "not a known loss"),
        ({"loss": "sft"}, "stage='dpo' with config.loss='sft'"),
        ({"global_batch_size": 10, "grad_accum_steps": 4}, "global_batch_size=10 is not divisible by"),
        ({"nonfinite_policy": "ignore"}, "nonfinite_policy='ignore'"),
        ({"model.dropout_rate": 0.1}, "dropout"),
        ({"learning_rate": float("nan")}, "learning_rate=nan must be a finite number > 0"),
        ({"learning_rate": -1e-4}, "learning_rate=-0.0001 must be"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm=inf must be a finite number >= 0"),
        ({"eval_sample_temperature": -1.0}, "config.eval_sample_temperature=-1.0 must be a finite number >= 0"),
        (
            {"stage": "reward_model", "loss": "bradley_terry", "data.pack": True},
            "data.pack is for the policy",
        ),
    ],
)
def test_bad_settings_fail_when_the_config_is_read(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(tiny_config("hh", "tiny", **overrides))


def test_batch_not_divisible_by_data_parallel_size(tmp_path):
    config = tiny_config("hh", "tiny", global_batch_size=12)
    with pytest.raises(ValueError, match=r"micro-batch of 12 .* not divisible by the data-parallel size 8"):
        train_and_evaluate(config, str(tmp_path))


def test_mesh_that_does_not_match_the_devices(tmp_path):
    config = tiny_config("hh", "tiny", mesh_shape=(3, 1, 1))
    with pytest.raises(ValueError, match="3"):
        train_and_evaluate(config, str(tmp_path))


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=f"workdir '{blocker}/run' is not writable"):
        train_and_evaluate(tiny_config("hh", "tiny"), str(blocker / "run"))


