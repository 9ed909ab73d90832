"""Deviceless compilation of the trainer's programs for a TPU slice and an H100, on a CPU.

Needs the `aot` extra (libtpu; the CUDA plugin for the H100 case), which CI installs. The tiny
model keeps each compile to seconds; the numbers asserted are the compiler's, so a regression in
the sharding (a replicated state, a gathered batch) or in the memory accounting shows here.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from configs.hh import get_config
from dpo_jax.models.loading import describe_model
from dpo_jax.perf.aot import AotConfigError, compile_config, fit_advice, format_table, target_mesh
from dpo_jax.perf.targets import TARGETS, jax_has_platform_plugin

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_tpu = pytest.mark.skipif(
    not jax_has_platform_plugin("tpu"), reason='needs libtpu: pip install -e ".[aot]"'
)
needs_cuda = pytest.mark.skipif(
    not jax_has_platform_plugin("cuda"), reason='needs the CUDA plugin: pip install -e ".[aot]"'
)
FIELDS = {
    "program", "target", "device_kind", "chips", "hosts", "mesh", "rows", "argument_gib", "output_gib",
    "alias_gib", "temp_gib", "resident_other_gib", "peak_gib", "hbm_gib", "fits", "margin_gib",
    "collectives", "custom_calls", "attention", "model", "num_params", "seq", "micro_batch",
}  # fmt: skip


@pytest.fixture(scope="module")
def tpu_results():
    config = get_config("tiny,precompute")
    config.mesh_shape = (1, -1, 1)  # FSDP over the 8 chips of a v5e-8
    config.global_batch_size = 16
    return compile_config(config, TARGETS["v5e-8"])


@needs_tpu
def test_tpu_slice_programs(tpu_results):
    results, advice = tpu_results
    assert advice is None
    by_name = {r["program"]: r for r in results}
    assert set(by_name) == {"train_step", "eval_step", "reference_logps"}
    train = by_name["train_step"]
    assert FIELDS <= set(train)
    assert train["device_kind"] == "TPU v5 lite" and train["chips"] == 8 and train["hbm_gib"] == 16.0
    assert train["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert train["fits"] and 0 < train["peak_bytes"] < 2**26
    assert train["margin_gib"] == pytest.approx(16 - train["peak_bytes"] / 2**30, abs=2e-3)
    # The state is donated: its outputs alias its arguments.
    assert train["alias_gib"] > 0
    # FSDP: weights all-gathered, gradients reduced (all-reduce or reduce-scatter, as XLA sees fit).
    kinds = set(train["collectives"])
    assert "all-gather" in kinds and kinds & {"all-reduce", "reduce-scatter"} and "all-to-all" not in kinds
    assert all(c["count"] > 0 and c["bytes"] > 0 for c in train["collectives"].values())
    assert 0 < train["estimated_mfu"] < 1 and train["estimated_step_seconds"] > 0
    assert "estimate" in train["estimate_note"]
    # The reference pass runs with the whole train state resident; eval with the optimizer state.
    resident = {name: r["resident_other_bytes"] for name, r in by_name.items()}
    assert resident["reference_logps"] > resident["eval_step"] > resident["train_step"] == 0
    json.dumps(results)  # RESULT lines are JSON
    assert "train_step" in format_table(results)


@needs_cuda
def test_h100_programs():
    results, advice = compile_config(get_config("tiny"), TARGETS["h100"])
    assert advice is None
    train = next(r for r in results if r["program"] == "train_step")
    assert FIELDS <= set(train)
    assert train["device_kind"] == "NVIDIA H100 80GB HBM3" and train["hbm_gib"] == pytest.approx(
        79.1, abs=0.1
    )
    assert train["collectives"] == {}  # one device
    assert "estimated_mfu" not in train  # no cost model on GPU: nothing is made up


@needs_tpu
def test_a_mesh_that_does_not_divide_says_what_would():
    with pytest.raises(AotConfigError, match=r"mesh_shape='\(1, 8, 1\)'"):
        target_mesh((3, 1, 1), TARGETS["v5e-8"])


def test_advice_when_nothing_fits():
    config = get_config("")  # Pythia-2.8B, as shipped
    model_cfg = describe_model(config.model, param_dtype="float32")
    mesh = type("Mesh", (), {"shape": {"data": 4, "fsdp": 1, "tensor": 1}})()
    failing = [dict(program="train_step", fits=False, margin_gib=-30.0, peak_gib=62.0)]
    config.mesh_shape, config.model.remat_policy = (-1, 1, 1), "none"
    advice = fit_advice(config, TARGETS["v4-8"], mesh, failing, model_cfg)
    assert "train_step needs 62.0 GiB" in advice
    assert (
        "mesh_shape='(1, 4, 1)'" in advice
        and "grad_accum_steps=8" in advice
        and "remat_policy=full" in advice
    )
    small = dataclasses.replace(TARGETS["v4-8"], hbm_bytes=2**30)
    assert "No mesh of v4-8 fits" in fit_advice(config, small, mesh, failing, model_cfg)
    assert fit_advice(config, TARGETS["v4-8"], mesh, [dict(failing[0], fits=True)], model_cfg) is None


@needs_tpu
def test_command_reports_a_bad_mesh_as_one_message():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    completed = subprocess.run(
        [sys.executable, "-m", "dpo_jax.aot", "--config=configs/hh.py:tiny", "--target=v5e-8",
         "--config.mesh_shape=(3,1,1)"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "v5e-8: mesh_shape (3, 1, 1)" in completed.stderr and "Traceback" not in completed.stderr
