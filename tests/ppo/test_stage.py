"""`stage=ppo` as the command runs it (`ppo.run_ppo_stage`): the HH fixture's prompts, a reward-model
export scoring the rollouts, responses ending at EOS, on the 8 fake CPU devices."""

import json

import jax
import numpy as np
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


def test_ppo_gt_with_a_classifier_reward_and_the_adaptive_controller(tmp_path):
    """PPO-GT from the command line's fields: a tiny RoBERTa sentiment classifier as the reward (p(POSITIVE)
    of the decoded texts), the KL coefficient adapted toward a target; stopped after rollout 1 and resumed,
    the second rollout runs at the coefficient the controller moved to."""
    from dpo_jax.data import load_tokenizer
    from tests.models.conftest import make_hf_roberta

    tokenizer = load_tokenizer("tiny")
    make_hf_roberta(vocab_size=len(tokenizer), seed=3).save_pretrained(tmp_path / "classifier")
    tokenizer.save_pretrained(tmp_path / "classifier")
    config = tiny_config("hh", "tiny")
    config.stage = "ppo"
    config.ppo.reward_model = str(tmp_path / "classifier")
    config.ppo.reward_label = "POSITIVE"
    config.ppo.max_new_tokens = 6
    config.ppo.num_epochs, config.ppo.minibatch_size = 1, config.global_batch_size
    config.ppo.kl_coef = 0.5
    # Rollout 1's policy is the reference, so its KL (~0) is far below the target: the error clips to
    # -0.2 and, with a horizon of one batch, the coefficient falls by exactly 20%.
    config.ppo.kl_target, config.ppo.kl_horizon = 1.0, config.global_batch_size
    config.num_train_steps = 1
    run_ppo_stage(config, str(tmp_path / "ppo"))
    config.num_train_steps = 2
    run_ppo_stage(config, str(tmp_path / "ppo"))  # resumes from the checkpoint of rollout 1
    records = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in records if "ppo/kl_coef" in r}
    assert abs(by_step[1]["rollout/kl"]) < 0.8 * config.ppo.kl_target
    assert by_step[1]["ppo/kl_coef"] == np.float32(0.5)
    assert by_step[2]["ppo/kl_coef"] == np.float32(0.5 * 0.8)
    for record in by_step.values():
        assert 0 <= record["rollout/score"] <= 1  # a probability
