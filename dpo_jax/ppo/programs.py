"""PPO's program builder: every jitted program of a PPO step, traced inside the mesh and its logical-axis
rules (so the models' activation constraints and splash attention's shard_map take effect).

    programs = build_ppo_programs(config, policy, module, prompt_length, state_shardings, mesh, rules,
                                  eos_id=..., pad_id=...)
    programs.rollout(policy_params, prompt_ids, prompt_mask, rng) -> (response_ids, response_mask)
    programs.rollout_targets(params, reference_params, rollout, kl_coef) -> (minibatch targets, rollout stats)
    programs.ppo_update(state, minibatch) -> (state, metrics)

The loop (`ppo.loop`) runs them and `aot` compiles the same programs for a target, so what is compiled
ahead of time is what runs. A reward model scores with the judges' one scoring program
(`judges.scoring.score_program`, through `ppo.rewards`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from dpo_jax.ppo.model import PolicyAndValue, make_logits_fn, make_policy_value_fn
from dpo_jax.ppo.rollout import make_rollout_targets, sample_responses
from dpo_jax.ppo.step import jit_ppo_update
from dpo_jax.sharding import traced_in_context


@dataclasses.dataclass
class PPOPrograms:
    rollout: Callable  # KV-cache sampling of the responses at temperature 1
    rollout_targets: Callable  # the teacher-forced pass: old log-probs, values, reference log-probs, GAE
    ppo_update: Callable  # one clipped policy / value update on a minibatch, the state donated


def build_ppo_programs(
    config,
    policy,
    module: PolicyAndValue,
    prompt_length: int,
    state_shardings,
    mesh,
    rules,
    *,
    eos_id,
    pad_id,
) -> PPOPrograms:
    """PPO's programs for prompts of `prompt_length` tokens (`eos_id` None: responses never stop early)."""
    settings = config.ppo

    def rollout(params, prompt_ids, prompt_mask, rng):
        return sample_responses(
            policy,
            params,
            prompt_ids,
            prompt_mask,
            rng=rng,
            max_new_tokens=settings.max_new_tokens,
            eos_id=eos_id,
            pad_id=pad_id,
        )

    apply_fn = make_policy_value_fn(module)
    targets = make_rollout_targets(apply_fn, make_logits_fn(policy), settings, prompt_length)
    return PPOPrograms(
        rollout=jax.jit(traced_in_context(rollout, mesh, rules)),
        rollout_targets=jax.jit(traced_in_context(targets, mesh, rules)),
        ppo_update=jit_ppo_update(apply_fn, settings, prompt_length, state_shardings, mesh, rules),
    )
