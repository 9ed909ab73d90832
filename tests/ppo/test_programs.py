"""PPO's rollout program decodes on the sampler's placement: it takes the train state's FSDP-sharded
policy params, reshards them once on entry (replicated, or split over a regrouped tensor axis where a
copy does not fit), gathers no weight per generated token, and samples what the sampler samples on
one device; the train state it reads stays intact for the update to donate."""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from dpo_jax.perf.hlo import decode_loop_collectives, summarize_hlo
from dpo_jax.ppo.model import POLICY, PolicyAndValue
from dpo_jax.ppo.programs import build_ppo_programs
from dpo_jax.ppo.rollout import sample_responses
from dpo_jax.ppo.settings import resolve_ppo_sizes
from dpo_jax.run.optim import make_optimizer
from dpo_jax.run.scaffold import optimizer_config
from dpo_jax.run.state import create_train_state
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, make_global_batch, make_mesh
from tests.ppo.test_loop import config as ppo_config
from tests.synthetic.tiny_models import random_params, tiny_lm

VOCAB, EOS, PAD, NEW = 16, 3, 0, 5


def setup(decode_device_bytes=None):
    """(programs, train state on a (1, 8, 1) FSDP mesh, prompts on that mesh, the policy's host params)."""
    policy, _ = tiny_lm("gpt2", VOCAB)
    module = PolicyAndValue(policy.config, policy.config)
    host = random_params(module, seed=3, std=0.3)
    config = resolve_ppo_sizes(ppo_config(1))
    config.ppo.max_new_tokens = NEW
    mesh, rules = make_mesh((1, 8, 1)), DEFAULT_LOGICAL_AXIS_RULES
    tx, _ = make_optimizer(optimizer_config(config, 1))
    state, shardings, _ = create_train_state(module, host, tx, mesh, rules, seed=0)
    programs = build_ppo_programs(
        config, policy, module, 4, shardings, mesh, rules, eos_id=EOS, pad_id=PAD,
        decode_device_bytes=decode_device_bytes,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (8, 4)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[::2, 0] = 0  # left padding
    prompts = make_global_batch({"ids": ids, "mask": mask}, mesh)
    return programs, state, prompts, host[POLICY], (ids, mask)


def test_the_rollout_gathers_each_weight_once_per_rollout_and_none_per_token():
    programs, state, prompts, policy_host, (ids, mask) = setup()
    placement = programs.rollout_placement
    assert dict(placement.mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert all(s.is_fully_replicated for s in jax.tree.leaves(placement.shardings))
    rng = jax.random.PRNGKey(5)
    compiled = programs.rollout.lower(state.params[POLICY], prompts["ids"], prompts["mask"], rng).compile()
    text = compiled.as_text()
    assert decode_loop_collectives(text) == {}
    # The reshard in: at most one all-gather per weight split over fsdp, for the whole rollout (the
    # training layout gathered each of them twice: for the prefill and again for the decode loop).
    split = sum(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params[POLICY]))
    gathers = summarize_hlo(text)["collectives"].get("all-gather", {"count": 0})["count"]
    assert 0 < gathers <= split
    tokens, response_mask = compiled(state.params[POLICY], prompts["ids"], prompts["mask"], rng)
    # The train state is read, not consumed: the update can still donate it.
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(state.params))
    # What the sampler samples on one device with the same key and params.
    want_tokens, want_mask = sample_responses(
        tiny_lm("gpt2", VOCAB)[0], policy_host, ids, mask, rng=rng, max_new_tokens=NEW, eos_id=EOS, pad_id=PAD
    )
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(want_tokens))
    np.testing.assert_array_equal(np.asarray(response_mask), np.asarray(want_mask))


def test_a_policy_that_does_not_fit_whole_decodes_split_over_a_regrouped_tensor_axis():
    programs, *_ = setup()
    whole = programs.rollout_placement.param_bytes_per_device
    programs, state, prompts, _, _ = setup(decode_device_bytes=whole)  # half of it is the copy's share
    placement = programs.rollout_placement
    # The 2-head model: the 8 devices as (4, 1, 2), in the train mesh's device order, so one program
    # holds the FSDP params and the decode placement.
    assert dict(placement.mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 2}
    assert list(placement.mesh.devices.flat) == list(make_mesh((1, 8, 1)).devices.flat)
    assert placement.param_bytes_per_device < whole
    # Every argument on the train mesh, as the loop (and aot) passes them.
    rng = jax.device_put(jax.random.PRNGKey(5), NamedSharding(make_mesh((1, 8, 1)), PartitionSpec()))
    compiled = programs.rollout.lower(state.params[POLICY], prompts["ids"], prompts["mask"], rng).compile()
    per_token = decode_loop_collectives(compiled.as_text())
    assert per_token["all-reduce"]["count"] >= 3  # tensor-parallel reductions of activations
    # No weight is gathered per token: the only gather is the CDF search's block sums of a device's rows.
    assert per_token.get("all-gather", {"bytes": 0})["bytes"] <= (8 // 4) * 128 * 4
    tokens, _ = compiled(state.params[POLICY], prompts["ids"], prompts["mask"], rng)
    assert np.asarray(tokens).shape == (8, NEW)
