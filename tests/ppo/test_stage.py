"""`stage=ppo` as the command runs it (`ppo.run_ppo_stage`): the HH fixture's prompts, a reward-model
export scoring the rollouts, responses ending at EOS, on the 8 fake CPU devices."""

import json

import jax
import pytest

from dpo_jax.models.loading import load_scalar_head_model
from dpo_jax.models.reward import to_hf_reward_model
from dpo_jax.ppo import run_ppo_stage
from tests.train_helpers import tiny_config


def test_ppo_stage_on_dataset_prompts_with_a_reward_model(tmp_path):
    config = tiny_config("hh", "tiny")
    model, params = load_scalar_head_model(config.model, param_dtype="float32", seed=1)
    to_hf_reward_model(model, params, str(tmp_path / "rm"), pad_token_id=None)
    config.stage = "ppo"
    config.ppo.reward_model = str(tmp_path / "rm")
    config.ppo.max_new_tokens = 6
    config.ppo.num_minibatches = config.ppo.num_epochs = 1
    config.num_train_steps = 2
    result = run_ppo_stage(config, str(tmp_path / "ppo"))
    assert result.steps == 2 and (tmp_path / "ppo" / "export" / "config.json").exists()
    last = json.loads((tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 1 <= last["rollout/response_length"] <= 6 and jax.numpy.isfinite(last["rollout/score"])


def test_ppo_stage_needs_a_reward_model(tmp_path):
    config = tiny_config("hh", "tiny")
    config.stage = "ppo"
    with pytest.raises(ValueError, match="config.ppo.reward_model"):
        run_ppo_stage(config, str(tmp_path))
