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

import numpy as np
import pytest

from configs.hh import get_config
from configs.tldr import get_config as get_tldr_config
from dpo_jax import data as data_lib
from dpo_jax.data.packing import layout_from_config
from dpo_jax.models.loading import describe_model
from dpo_jax.perf.aot import (
    AotConfigError,
    BatchShape,
    CompilerOutOfMemory,
    Program,
    analyze,
    compile_config,
    fit_advice,
    format_table,
    target_mesh,
)
from dpo_jax.perf.targets import TARGETS, jax_has_platform_plugin
from dpo_jax.sharding import make_mesh

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
    "collectives", "custom_calls", "attention", "model", "num_params", "seq", "micro_batch", "layout",
    "row_length", "slots", "responses",
}  # fmt: skip


def _tiny_fsdp_config(*, share_prompt: bool, pack: bool = False):
    config = get_config("tiny,precompute")
    config.mesh_shape = (1, -1, 1)  # FSDP over the 8 chips of a v5e-8
    config.global_batch_size = 16
    config.data.share_prompt, config.data.pack = share_prompt, pack
    return config


@pytest.fixture(scope="module")
def tpu_results():
    return compile_config(_tiny_fsdp_config(share_prompt=False), TARGETS["v5e-8"])


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
    assert (train["layout"], train["rows"], train["row_length"], train["slots"]) == ("padded", 16, None, None)
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


@pytest.mark.parametrize("share_prompt, pack", [(False, False), (True, False), (True, True)])
def test_abstract_batches_are_the_loaders(share_prompt, pack):
    # Field names, dtypes and ranks as the loader builds them; every real shape within the worst case.
    config = _tiny_fsdp_config(share_prompt=share_prompt, pack=pack)
    prepared = data_lib.build_datasets(config.data, data_lib.load_tokenizer("tiny"), stage="dpo")
    logps = np.zeros((prepared.train.num_examples, 2), np.float32)
    prepared = dataclasses.replace(prepared, train=prepared.train.with_extras(reference_logps=logps))
    mesh = make_mesh((1, 8, 1))
    common = dict(process_index=0, process_count=1, layout=layout_from_config(config.data, row_multiple=8))
    real = {
        False: data_lib.make_train_loader(prepared, global_batch_size=16, seed=0, **common).batch(0),
        True: data_lib.make_eval_batches(prepared, global_batch_size=16, split="train", **common).batch(0),
    }
    shape = BatchShape.from_config(config, responses=2)
    for eval_pass, batch in real.items():
        abstract = shape.batch(mesh, 16, reference_logps=True, eval_pass=eval_pass)
        assert sorted(abstract) == sorted(batch), eval_pass
        for name, array in batch.items():
            want = abstract[name]
            assert (want.dtype, want.ndim) == (array.dtype, array.ndim), name
            assert all(got <= bound for got, bound in zip(array.shape, want.shape)), (name, array.shape)
    assert shape.name == {(False, False): "padded", (True, False): "share_prompt"}.get(
        (share_prompt, pack), "share_prompt+pack"
    )
    if share_prompt:  # the worst case of a 64-token max_length: a pair takes up to 2 x 64 tokens
        assert shape.row_shape(16) == (128, 16 if pack else 1) and shape.tokens(16) == 16 * 128


@needs_tpu
def test_tpu_slice_compiles_the_shared_prompt_packed_rows():
    config = _tiny_fsdp_config(share_prompt=True, pack=True)
    results, advice = compile_config(config, TARGETS["v5e-8"])
    assert advice is None
    by_name = {r["program"]: r for r in results}
    assert set(by_name) == {"train_step", "eval_step", "reference_logps"}
    for result in results:
        assert FIELDS <= set(result) and result["fits"]
        assert result["layout"] == "share_prompt+pack"
        # One example per row in the worst case, rows of 2 x max_length, up to 16 slots.
        assert (result["rows"], result["row_length"], result["slots"]) == (16, 128, 16)
        assert result["attention"] == "pallas/mosaic kernel"  # splash on the rows' ids, not a dense mask
    train = by_name["train_step"]
    assert "all-gather" in train["collectives"] and train["alias_gib"] > 0
    assert "16x128 rows" in format_table(results)


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


def _tiny_gptj_with_256_wide_heads():
    """tldr.py's tiny GPT-J with GPT-J-6B's head size: 2 heads of 256 (cuDNN's widest, on Hopper)."""
    config = get_tldr_config("tiny,gptj")
    config.model.random_init_config.update(n_embd=512, n_head=2)
    assert describe_model(config.model, param_dtype="float32").head_dim == 256
    return config


@needs_cuda
@pytest.mark.parametrize(
    "make_config", [lambda: get_config("tiny"), _tiny_gptj_with_256_wide_heads], ids=["gpt2", "gptj-256"]
)
def test_h100_programs_trace_cudnn_attention_without_a_local_cudnn(make_config):
    """bf16 on an H100 picks cuDNN flash attention, on the shared-prompt rows the loader now builds by
    default, GPT-J's 256-wide heads included; its trace-time cuDNN checks (the version, and the
    compute capability that allows heads of 256) are answered from the target on this CPU host."""
    config = make_config()
    config.model.dtype = "bfloat16"
    results, _ = compile_config(config, TARGETS["h100"])
    train = next(r for r in results if r["program"] == "train_step")
    assert train["layout"] == BatchShape.from_config(config, 2).name
    assert any(call.startswith("__cudnn$fmha") for call in train["custom_calls"]), train["custom_calls"]
    assert train["attention"] == "cudnn flash attention"


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
def test_a_program_the_compiler_itself_refuses_is_a_does_not_fit_verdict():
    # As GPT-J-6B's replicated scorer on a v5e-16: the TPU compiler raises RESOURCE_EXHAUSTED itself
    # when a program's temporaries alone exceed the chip (here 32 GiB of a running sum on 16 GiB).
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    target = TARGETS["v5e-8"]
    mesh = target_mesh((8, 1, 1), target)
    x = jax.ShapeDtypeStruct((8,), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    program = Program("huge", jax.jit(lambda x: jnp.cumsum(jnp.ones(2**33) * x[0])[-1]), (x,), 0, 0.0, 1)
    with pytest.raises(CompilerOutOfMemory, match=r"^huge on v5e-8: .*RESOURCE_EXHAUSTED"):
        analyze(program, target, mesh)


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


@needs_tpu
def test_an_sft_stage_is_compiled_on_one_response_per_example():
    config = get_config("tiny,sft")
    assert config.stage == "sft"
    results, _ = compile_config(config, TARGETS["v5e-8"])
    assert {r["responses"] for r in results} == {1}
    two, _ = compile_config(config, TARGETS["v5e-8"], responses=2)  # an explicit count still wins
    assert {r["responses"] for r in two} == {2} and two[0]["peak_bytes"] > results[0]["peak_bytes"]
