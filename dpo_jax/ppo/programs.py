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

The rollout decodes on the sampler's placement (`sampling.sharded.decode_placement`), not in the
training layout: left FSDP-sharded, the weights are gathered inside the decode loop on the TPU slices
(a weight all-gather per layer per generated token: 388 a token for Pythia-2.8B on v4-8, BENCHMARKS.md
5.1). The program takes the train state's policy params as they lie and reshards them once on entry
(`with_sharding_constraint` to the placement: replicated over the batch axes, or split over a larger
tensor axis where a copy does not fit beside what stays resident), then decodes with no weight
collective per token. The train state's buffers are only read (never donated to the rollout), so the
update's donation of the state is unchanged; the placed copy is the program's temporary, freed when
it returns. The room a copy may take is the device's free memory when the programs are built (the
train state, reference and reward model already placed), or the target's HBM less what stays resident
when `aot` compiles them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
from jax.sharding import NamedSharding, PartitionSpec

from dpo_jax.ppo.model import PolicyAndValue, make_logits_fn, make_policy_value_fn
from dpo_jax.ppo.rollout import make_rollout_targets, sample_responses
from dpo_jax.ppo.step import jit_ppo_update
from dpo_jax.sampling.sharded import Placement, decode_placement, free_device_bytes
from dpo_jax.sharding import BATCH_MESH_AXES, traced_in_context


@dataclasses.dataclass
class PPOPrograms:
    rollout: Callable  # KV-cache sampling of the responses at temperature 1
    rollout_targets: Callable  # the teacher-forced pass: old log-probs, values, reference log-probs, GAE
    ppo_update: Callable  # one clipped policy / value update on a minibatch, the state donated
    rollout_placement: Placement  # where the rollout decodes: its mesh, rules and the params' shardings


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
    decode_device_bytes: int | None = None,
) -> PPOPrograms:
    """PPO's programs for prompts of `prompt_length` tokens (`eos_id` None: responses never stop early).
    `decode_device_bytes`: the room a device has for the rollout's decode copy of the policy (default:
    its free memory now; None on CPU: a whole copy)."""
    settings = config.ppo
    if decode_device_bytes is None:
        decode_device_bytes = free_device_bytes(mesh)
    placement = decode_placement(policy, mesh, rules, decode_device_bytes, keep_device_order=True)
    rows = NamedSharding(placement.mesh, PartitionSpec(BATCH_MESH_AXES, None))

    def rollout(params, prompt_ids, prompt_mask, rng):
        # The reshard in: one gather (or re-split) of the weights per rollout, before the decode loop.
        params = jax.lax.with_sharding_constraint(params, placement.shardings)
        prompt_ids, prompt_mask = (
            jax.lax.with_sharding_constraint(x, rows) for x in (prompt_ids, prompt_mask)
        )
        rng = jax.lax.with_sharding_constraint(rng, NamedSharding(placement.mesh, PartitionSpec()))
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
        rollout=jax.jit(
            traced_in_context(rollout, placement.mesh, placement.rules), out_shardings=(rows, rows)
        ),
        rollout_targets=jax.jit(traced_in_context(targets, mesh, rules)),
        ppo_update=jit_ppo_update(apply_fn, settings, prompt_length, state_shardings, mesh, rules),
        rollout_placement=placement,
    )
