"""The policy and its value model as one Flax module, so they share one train state, one optimizer and
one set of shardings: params `{"policy": <language model>, "value": <ScalarHeadModel>}`.

The value model is a separate network (as in the current standard recipes, e.g. TRL's PPO trainer),
not a head on the policy's trunk: the value loss then never moves the policy, which matters on the
small models the exact benchmark uses.
"""

from __future__ import annotations

import flax.linen as nn

from dpo_jax.models import build_model
from dpo_jax.models.config import ModelConfig
from dpo_jax.models.reward import ScalarHeadModel

POLICY = "policy"
VALUE = "value"


class PolicyAndValue(nn.Module):
    """`apply(params, input_ids, attention_mask) -> (logits [B, L, V], values [B, L])`."""

    policy_config: ModelConfig
    value_config: ModelConfig

    def setup(self):
        self.policy = build_model(self.policy_config)
        self.value = ScalarHeadModel(self.value_config)

    def __call__(self, input_ids, attention_mask=None):
        logits = self.policy(input_ids, attention_mask)
        values = self.value(input_ids, attention_mask)
        return logits, values


def make_policy_value_fn(module: PolicyAndValue):
    """`(params, input_ids, attention_mask) -> (logits, values)`, as the rollout and the update call it."""

    def apply_fn(params, input_ids, attention_mask):
        return module.apply({"params": params}, input_ids, attention_mask)

    return apply_fn


def make_logits_fn(model: nn.Module):
    """`(params, input_ids, attention_mask) -> logits` of a language model (the frozen reference)."""

    def apply_fn(params, input_ids, attention_mask):
        return model.apply({"params": params}, input_ids, attention_mask=attention_mask)

    return apply_fn
