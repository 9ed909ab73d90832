"""`python -m dpo_jax.aot --program=sample|score`: the evaluations' decode program and scoring pass,
compiled deviceless for a TPU slice and an H100 at the config's `sampling` shapes (tiny models)."""

import dataclasses
import math
import subprocess
import sys

import jax
import pytest

from configs.hh import get_config
from dpo_jax.judges.scoring import bucket_length, scoring_rows
from dpo_jax.models import from_hf
from dpo_jax.perf.aot import compile_config, format_table, target_mesh
from dpo_jax.perf.targets import GIB, TARGETS
from dpo_jax.sampling.sharded import prompts_per_call
from dpo_jax.sharding import make_mesh
from tests.judges.tiny_classifiers import save_tiny_roberta_classifier
from tests.perf.test_aot import REPO, needs_cuda, needs_tpu
from tests.train_helpers import process_env


def _config(**sampling):
    config = get_config("tiny")
    config.mesh_shape = (1, -1, 1)  # the run's FSDP mesh: the sampler must not decode on it as is
    config.sampling.update(sampling)
    return config


def _tiny_params():
    from dpo_jax.models import abstract_params, build_model
    from dpo_jax.models.loading import describe_model

    config = get_config("tiny")
    return abstract_params(build_model(describe_model(config.model, param_dtype=config.model.param_dtype)))


@pytest.fixture(scope="module")
def sample_v5e():
    config = _config(batch_size=12, num_samples=3, max_new_tokens=8)
    (result,), advice = compile_config(config, TARGETS["v5e-8"], program="sample")
    return config, result, advice


@needs_tpu
def test_sample_compiles_the_samplers_decode_program_at_the_evaluations_batch(sample_v5e):
    config, result, advice = sample_v5e
    mesh = target_mesh(config.mesh_shape, TARGETS["v5e-8"])
    # Weights replicated over the batch axes (the decode placement), rows split over all 8 chips:
    # 12 rows of 3 samples = 4 prompts, rounded up to 8 prompts so that each chip gets a prompt.
    assert prompts_per_call(12, 3, mesh) == 8
    assert result["prompts_per_call"] == 8 and result["rows"] == 24 and result["samples_per_prompt"] == 3
    assert result["placement"].startswith("replicated over the batch axes, split 1 way")
    assert result["fits"] and advice is None and result["program"] == "sample"
    assert result["collectives_per_token"] == {}  # no tensor axis: a generated token runs no collective
    # The KV cache per device: keys and values of every layer for 3 of the 24 rows, 32 + 8 positions.
    model_cfg = config.model.random_init_config
    kv = 2 * model_cfg.n_layer * 3 * (32 + 8) * model_cfg.n_embd * 4
    assert result["kv_cache_bytes"] == kv and result["kv_cache_gib"] == round(kv / GIB, 3)
    params = result["params_bytes"]
    assert params == sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(_tiny_params()))  # whole copy
    assert result["bandwidth_bound_ms_per_token"] == round(1e3 * (params + kv) / 819e9, 4)
    assert "ONE loop iteration" in result["estimate_note"] and "estimated_mfu" not in result
    assert "sample" in format_table([result])


@needs_tpu
def test_a_model_too_big_to_replicate_is_split_over_tensor_and_pays_collectives_per_token():
    # A v5e whose chips hold 4 MiB: the tiny model's copy (~0.5 MiB) is more than half of that only
    # after the cut below, so the placement regroups the 8 chips with a tensor axis.
    target = dataclasses.replace(TARGETS["v5e-8"], hbm_bytes=2**19)
    (result,), advice = compile_config(_config(max_new_tokens=4), target, program="sample")
    assert (
        result["decode_mesh"]["tensor"] > 1
        and f"split {result['decode_mesh']['tensor']} way" in result["placement"]
    )
    assert result["collectives_per_token"].get("all-reduce", 0) > 0  # tensor-parallel reductions per token
    assert not result["fits"] and "--config.sampling.batch_size" in advice


@needs_tpu
def test_score_compiles_the_scorers_pass_for_a_roberta_classifier(tmp_path):
    directory = save_tiny_roberta_classifier(tmp_path / "roberta")
    config = _config(batch_size=5, max_new_tokens=8, scorer=directory)
    (result,), _ = compile_config(config, TARGETS["v5e-8"], program="score")
    devices = list(target_mesh(config.mesh_shape, TARGETS["v5e-8"]).devices.flat)
    # The scorer's own mesh (every chip on data) and padding: 5 sequences -> 8 rows, 40 tokens -> 64.
    mesh = make_mesh((-1, 1, 1), devices=devices)
    model, params = from_hf(directory)
    assert result["rows"] == scoring_rows(5, mesh) == 8 and result["mesh"] == {
        "data": 8,
        "fsdp": 1,
        "tensor": 1,
    }
    assert result["sequence_length"] == bucket_length(32 + 8, model.config.max_sequence_length)
    nbytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(params))
    assert result["params_bytes"] == nbytes and result["scorer"] == directory and result["fits"]


@needs_cuda
def test_sample_on_an_h100_target():
    (result,), _ = compile_config(_config(max_new_tokens=4), TARGETS["h100"], program="sample")
    assert result["device_kind"] == "NVIDIA H100 80GB HBM3" and result["fits"]
    assert result["collectives_per_token"] == {} and "estimated_step_seconds" not in result


def test_an_unknown_scorer_is_one_error_line_and_exit_2():
    done = subprocess.run(
        [
            sys.executable, "-m", "dpo_jax.aot", "--config=configs/hh.py:tiny", "--program=score",
            "--target=h100", "--config.sampling.scorer=someone/some-classifier",
        ],
        cwd=REPO, env=process_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and "someone/some-classifier" in errors[0] and "not a known classifier" in errors[0]
    )
