"""PPO's programs (`stage=ppo`) with abstract arguments, for `perf.aot` to compile for a target.

The programs are `ppo.programs.build_ppo_programs`' (and the reward model's `judges.scoring.score_program`), the
ones `ppo.loop` runs, on the worst-case shapes of the config: prompts of `data.max_prompt_length`
tokens, `ppo.max_new_tokens` response tokens, `global_batch_size` prompts per rollout and
`global_batch_size / ppo.num_minibatches` per update. The reward model and the value model are taken
to have the policy's architecture (the README's pipeline trains both from the SFT model).

Per program, what else stays on the devices while it runs (`resident_bytes`): the rest of the train
state (policy, value model, optimizer moments), the reference and the reward model. The rollout's
decode placement is chosen as the loop chooses it, from the room a device has beside all of that
(the target's HBM less the resident bytes and the policy's own shard), and its RESULT adds the decode
mesh, the placement and the collectives one generated token runs (`perf.hlo.decode_loop_collectives`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dpo_jax.judges.scoring import jit_score_program
from dpo_jax.models import build_model
from dpo_jax.models.config import as_dtype
from dpo_jax.models.loading import describe_model
from dpo_jax.models.reward import ScalarHeadModel
from dpo_jax.perf.hlo import decode_loop_collectives
from dpo_jax.ppo.model import POLICY, PolicyAndValue
from dpo_jax.ppo.programs import build_ppo_programs
from dpo_jax.ppo.step import MINIBATCH_KEYS
from dpo_jax.run.state import state_init_fn
from dpo_jax.sharding import abstract_sharded_state, batch_sharding

FLOAT_KEYS = ("old_logps", "old_values", "advantages", "returns", "scores")


def _cast(tree, dtype):
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, dtype, sharding=leaf.sharding), tree)


def ppo_programs(config, mesh, rules, optimizer, per_device_bytes, program_type, *, device_bytes: int):
    """-> ([Program], policy ModelConfig) for `stage=ppo` on devices of `device_bytes` each."""
    settings = config.ppo
    policy_cfg = describe_model(config.model, param_dtype=config.model.param_dtype)
    policy = build_model(policy_cfg)
    module = PolicyAndValue(policy_cfg, policy_cfg)
    abstract_state, _ = abstract_sharded_state(
        state_init_fn(module, optimizer, config.seed), jax.random.PRNGKey(config.seed), mesh, rules
    )
    shardings = jax.tree.map(lambda leaf: leaf.sharding, abstract_state)
    prompt, response = int(config.data.max_prompt_length), int(settings.max_new_tokens)
    rows, minibatch = (
        int(config.global_batch_size),
        int(config.global_batch_size) // int(settings.num_minibatches),
    )
    reference = _cast(abstract_state.params[POLICY], as_dtype(config.reference.param_dtype))
    score, (reward_params, *score_batch) = jit_score_program(
        ScalarHeadModel(policy_cfg), mesh, (rows, prompt + response), rules
    )
    reward_params = _cast(reward_params, as_dtype(config.reference.param_dtype))
    state_bytes, reference_bytes = per_device_bytes(abstract_state), per_device_bytes(reference)
    reward_bytes = per_device_bytes(reward_params)
    # What a device has left when the loop builds the programs: everything above is placed by then.
    free = max(0, device_bytes - state_bytes - reference_bytes - reward_bytes)
    # eos_id: any id; responses may stop early (the while loop's bound is max_new_tokens either way).
    programs = build_ppo_programs(
        config, policy, module, prompt, shardings, mesh, rules, eos_id=0, pad_id=0, decode_device_bytes=free
    )
    placement = programs.rollout_placement

    def rollout_details(compiled) -> dict:
        per_token = decode_loop_collectives(compiled.as_text())
        return dict(
            decode_mesh=dict(placement.mesh.shape),
            placement=placement.layout,
            decode_params_gib=round(placement.param_bytes_per_device / 2**30, 3),
            collectives_per_token={kind: v["count"] for kind, v in per_token.items()},
            collective_bytes_per_token=sum(v["bytes"] for v in per_token.values()),
        )

    def array(shape, dtype=jnp.int32):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))

    def sequences(count):
        shapes = dict(
            input_ids=(count, prompt + response), attention_mask=(count, prompt + response),
            response_ids=(count, response), response_mask=(count, response),
            old_logps=(count, response), old_values=(count, response), advantages=(count, response),
            returns=(count, response), scores=(count,),
        )  # fmt: skip
        return {k: array(v, jnp.float32 if k in FLOAT_KEYS else jnp.int32) for k, v in shapes.items()}

    policy_bytes, params_bytes = (
        per_device_bytes(abstract_state.params[POLICY]),
        per_device_bytes(abstract_state.params),
    )
    n, tokens = policy_cfg.num_params(), prompt + response
    rollout_batch = {k: v for k, v in sequences(rows).items() if k not in MINIBATCH_KEYS[4:]}
    rng = jax.ShapeDtypeStruct(
        (2,), jnp.uint32, sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )
    return [
        program_type(
            "rollout", programs.rollout,
            (abstract_state.params[POLICY], array((rows, prompt)), array((rows, prompt)), rng),
            resident_bytes=state_bytes - policy_bytes + reference_bytes + reward_bytes,
            model_flops=2 * n * rows * tokens, rows=rows, details=rollout_details,
        ),
        program_type(
            "score", score, (reward_params, *score_batch),
            resident_bytes=state_bytes + reference_bytes, model_flops=2 * n * rows * tokens, rows=rows,
        ),
        program_type(
            "rollout_targets", programs.rollout_targets,
            (abstract_state.params, reference, rollout_batch, jax.ShapeDtypeStruct((), jnp.float32)),
            resident_bytes=state_bytes - params_bytes + reward_bytes,
            model_flops=3 * 2 * n * rows * tokens, rows=rows,  # policy, value model and reference forwards
        ),
        program_type(
            "ppo_update", programs.ppo_update,
            (abstract_state, {k: v for k, v in sequences(minibatch).items() if k in MINIBATCH_KEYS}),
            resident_bytes=reference_bytes + reward_bytes,
            model_flops=2 * 6 * n * minibatch * tokens, rows=minibatch,  # policy and value model trained
        ),
    ], policy_cfg  # fmt: skip
