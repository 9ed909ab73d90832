"""`stage=ppo` compiled ahead of time: PPO's own programs (`ppo.programs`, as `ppo.loop` runs them) for a
TPU slice, one RESULT per program, from the tiny model on a CPU (needs libtpu, the `aot` extra)."""

import pytest

from configs.hh import get_config
from dpo_jax.perf.aot import compile_config
from dpo_jax.perf.targets import TARGETS, jax_has_platform_plugin

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not jax_has_platform_plugin("tpu"), reason='needs libtpu: pip install -e ".[aot]"'),
]


def test_ppo_programs_compile_for_a_tpu_slice():
    config = get_config("tiny")
    config.stage = "ppo"
    config.mesh_shape = (1, -1, 1)  # FSDP over the 8 chips
    config.global_batch_size = 16
    config.ppo.num_minibatches = 2
    config.ppo.max_new_tokens = 8
    results, advice = compile_config(config, TARGETS["v5e-8"])
    assert [r["program"] for r in results] == ["rollout", "score", "rollout_targets", "ppo_update"]
    assert advice is None and all(r["fits"] for r in results)
    by_name = {r["program"]: r for r in results}
    tokens = config.data.max_prompt_length + config.ppo.max_new_tokens
    assert {r["seq"] for r in results} == {tokens} and by_name["ppo_update"]["rows"] == 16 // 2
    assert by_name["rollout"]["rows"] == by_name["score"]["rows"] == 16
    # Traced inside the mesh's rules: the FSDP-sharded params are gathered, gradients reduced.
    assert by_name["ppo_update"]["collectives"]["all-gather"]["count"] > 0
    assert by_name["ppo_update"]["collectives"]["all-reduce"]["count"] > 0
    for result in results:
        assert result["resident_other_gib"] >= 0 and result["peak_gib"] <= result["hbm_gib"]
