"""PPO's teacher-forced scoring of [left-padded prompt | right-padded response]: the policy's log-probs,
the value model's values and the reward model's scores are the same on cuDNN (its call routed to XLA's
reference path) as on XLA. In float32, which the routed call allows, so that the bound is sharp: the
bf16 models are compared in tests/models/test_attention_padding.py."""

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.models import ModelConfig
from dpo_jax.models.reward import ScalarHeadModel
from dpo_jax.ppo.model import PolicyAndValue, make_policy_value_fn
from dpo_jax.ppo.rewards import reward_model_fn
from dpo_jax.ppo.rollout import policy_outputs
from dpo_jax.sharding import make_mesh
from tests.models.test_attention_padding import float_tolerance, prompts_and_responses, route_cudnn_to_xla
from tests.synthetic.tiny_models import random_params

PROMPT, RESPONSE = 7, 5


def _scores(attention, params, batch, mesh):
    config = ModelConfig("gpt2", 64, 32, 2, 2, 64, 32, attention=attention)
    apply_fn = make_policy_value_fn(PolicyAndValue(config, config))
    logps, logits, values = jax.jit(lambda p, b: policy_outputs(apply_fn, p, b, PROMPT))(params, batch)
    reward = reward_model_fn(ScalarHeadModel(config), params["value"], mesh)
    scores = reward(batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
    real = np.asarray(batch["response_mask"], bool)
    magnitude = np.abs(np.asarray(logits, np.float32)[real]).max()
    return (np.where(real, logps, 0.0), np.where(real, values, 0.0), scores), magnitude


def test_rollout_scoring_with_cudnn_equals_xla(monkeypatch):
    prompt_ids, prompt_mask, response_ids, response_mask = prompts_and_responses(
        8, PROMPT, RESPONSE, vocab=64
    )
    batch = {
        "input_ids": np.concatenate([prompt_ids, response_ids], axis=1),
        "attention_mask": np.concatenate([prompt_mask, response_mask], axis=1),
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "response_ids": response_ids,
        "response_mask": response_mask,
    }
    config = ModelConfig("gpt2", 64, 32, 2, 2, 64, 32)
    params = random_params(PolicyAndValue(config, config), seed=8, std=0.3)
    mesh = make_mesh((8, 1, 1))
    want, logits_magnitude = _scores("xla", params, batch, mesh)
    route_cudnn_to_xla(monkeypatch)
    got, _ = _scores("cudnn", params, batch, mesh)
    # The bound for 2 layers over PROMPT + RESPONSE keys, on each output's magnitude; a log-prob moves at
    # most twice as far as the logits it is the log-softmax of.
    magnitudes = (2 * logits_magnitude, np.abs(want[1]).max(), np.abs(want[2]).max())
    for name, g, w, magnitude in zip(("log-probs", "values", "reward scores"), got, want, magnitudes):
        tol = float_tolerance(jnp.float32, magnitude, PROMPT + RESPONSE, layers=2)
        np.testing.assert_allclose(g, w, atol=tol, err_msg=name)
