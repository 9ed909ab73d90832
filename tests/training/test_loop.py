"""The trainer in-process on 8 fake CPU devices: every config's :tiny variant, SFT then DPO, overfitting."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import transformers

from dpo_jax.training.loop import train_and_evaluate
from tests.tolerances import f32_bound
from tests.train_helpers import exported_params, read_metrics, tiny_config, train_losses

TINY_VARIANTS = [
    ("hh", "tiny"),
    ("hh", "sft,tiny"),
    ("hh", "tiny,neox"),
    ("tldr", "tiny"),
    ("tldr", "sft,tiny"),
    ("imdb", "tiny"),
    ("imdb", "sft,tiny"),
]


@pytest.mark.parametrize("config_file,variant", TINY_VARIANTS)
def test_tiny_variant_trains_end_to_end(tmp_path, config_file, variant, caplog):
    caplog.set_level(logging.INFO, logger="dpo_jax")
    config = tiny_config(config_file, variant, num_train_steps=2)
    train_and_evaluate(config, str(tmp_path))
    records = read_metrics(tmp_path)
    assert sorted(records) == [1, 2]
    for record in records.values():
        assert np.isfinite(record["loss"]) and np.isfinite(record["grad_norm"])
        if config.stage == "dpo":
            assert {"rewards/accuracies", "rewards/margins", "rewards/chosen", "logps/rejected"} <= set(
                record
            )
    assert records[1]["data/train/examples"] > 0  # the bad-input report is part of the run's metrics
    evals = [json.loads(line) for line in Path(tmp_path, "metrics.jsonl").read_text().splitlines()]
    assert any("eval/loss" in e for e in evals)
    assert evals[0]["step"] == 0 and "eval/loss" in evals[0]  # do_first_eval, as the reference
    assert (tmp_path / "FINISHED").exists()
    samples = [json.loads(line) for line in (tmp_path / "samples" / "step_2.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(isinstance(s["policy"], str) for s in samples)
    assert all(("reference" in s) == (config.stage == "dpo") for s in samples)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert hf.config.model_type == config.model.random_init_config.model_type
    assert f"finished: step 2; exported to {tmp_path / 'export'}" in caplog.text  # the run's last line


# (config, variant, overrides): hh's tiny GPT-2 (its blocks a python loop), and the tiny GPT-J of tldr.py
# (the paper's TL;DR architecture) as tldr.py runs the 6B one: its blocks in one nn.scan, sharded over every
# mesh axis (the exported SFT run is unstacked to transformers' layout, and stacked again when DPO loads
# it). GPT-J's python loop trains through `main` in test_loop_resume.py (SIGKILL, bitwise resume) and its
# export round-trips through transformers in tests/models/test_gptj.py.
SCANNED = {"model.scan_layers": True, "mesh_shape": (2, 2, 2)}
SFT_THEN_DPO = [("hh", "tiny", {}), ("tldr", "tiny,gptj", SCANNED)]


@pytest.mark.parametrize("config_file,variant,overrides", SFT_THEN_DPO)
def test_sft_then_dpo_from_the_sft_workdir(tmp_path, config_file, variant, overrides):
    sft = tiny_config(config_file, "sft," + variant, num_train_steps=2, **overrides)
    train_and_evaluate(sft, str(tmp_path / "sft"))
    dpo = tiny_config(config_file, variant, num_train_steps=2, **overrides)
    dpo.model.name_or_path = str(tmp_path / "sft")  # a dpo_jax workdir stands for its exported policy
    dpo.tokenizer = ""  # ... and carries the tokenizer too
    train_and_evaluate(dpo, str(tmp_path / "dpo"))
    model_type = sft.model.random_init_config.model_type
    assert transformers.AutoConfig.from_pretrained(tmp_path / "dpo" / "export").model_type == model_type
    samples = (tmp_path / "dpo" / "samples" / "step_2.jsonl").read_text().splitlines()
    assert samples and all(isinstance(json.loads(s)["policy"], str) for s in samples)
    first = read_metrics(tmp_path / "dpo")[1]
    # Policy == reference (the SFT model) at step 1: every implicit reward is exactly 0 before the update.
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0
    # -log sigmoid(0) = log 2, rounded once, then averaged over the global batch of real prompts.
    batch_size = dpo.global_batch_size
    assert first["loss"] == pytest.approx(np.log(2.0), abs=f32_bound(np.log(2.0), batch_size + 2))
    # A bf16-stored reference (the default for real runs) differs from the fp32 policy only by rounding.
    dpo.reference.param_dtype = "bfloat16"
    train_and_evaluate(dpo, str(tmp_path / "dpo_bf16_reference"))
    first_bf16 = read_metrics(tmp_path / "dpo_bf16_reference")[1]
    assert 0.0 < abs(first_bf16["rewards/chosen"]) < 1e-2


def test_dpo_loss_falls_on_a_tiny_overfit_set(tmp_path):
    config = tiny_config(
        "hh",
        "tiny",
        num_train_steps=24,
        learning_rate=3e-3,
        grad_accum_steps=1,
        **{"data.max_train_examples": 16},
    )
    config.eval_every_examples = 10**6
    train_and_evaluate(config, str(tmp_path))
    losses = train_losses(tmp_path)
    assert losses[0] == pytest.approx(np.log(2.0), abs=1e-3)
    assert np.mean(losses[-4:]) < 0.5 * losses[0], losses
    assert read_metrics(tmp_path)[24]["rewards/accuracies"] == 1.0


def test_precomputed_reference_logps_give_the_same_run(tmp_path):
    live = tiny_config("hh", "tiny", num_train_steps=2)
    train_and_evaluate(live, str(tmp_path / "live"))
    pre = tiny_config("hh", "tiny,precompute", num_train_steps=2)
    train_and_evaluate(pre, str(tmp_path / "pre"))
    a, b = read_metrics(tmp_path / "live"), read_metrics(tmp_path / "pre")
    for step in (1, 2):
        for key in ("loss", "rewards/margins", "rewards/chosen"):
            assert a[step][key] == pytest.approx(b[step][key], abs=1e-5), (step, key)
    for name, value in exported_params(tmp_path / "live").items():
        np.testing.assert_allclose(value, exported_params(tmp_path / "pre")[name], atol=1e-5)


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    one = tiny_config("hh", "tiny", num_train_steps=2, global_batch_size=16, grad_accum_steps=1)
    two = tiny_config("hh", "tiny", num_train_steps=2, global_batch_size=16, grad_accum_steps=2)
    train_and_evaluate(one, str(tmp_path / "one"))
    train_and_evaluate(two, str(tmp_path / "two"))
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for step in (1, 2):
        for key in ("loss", "grad_norm", "rewards/accuracies", "logps/chosen"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5, abs=1e-6), (step, key)
    for name, value in exported_params(tmp_path / "one").items():
        np.testing.assert_allclose(value, exported_params(tmp_path / "two")[name], atol=1e-6)


def test_checkpoint_restores_onto_another_mesh(tmp_path):
    full = tiny_config("hh", "tiny", num_train_steps=4)
    train_and_evaluate(full, str(tmp_path / "full"))
    first = tiny_config("hh", "tiny", num_train_steps=2, mesh_shape=(8, 1, 1))
    train_and_evaluate(first, str(tmp_path / "moved"))
    # Same workdir, a different mesh: data 2 x fsdp 2 x tensor 2 shards embed, heads, mlp and vocab.
    second = tiny_config("hh", "tiny", num_train_steps=4, mesh_shape=(2, 2, 2))
    result = train_and_evaluate(second, str(tmp_path / "moved"))
    assert result.steps == 4
    wte = result.params["wte"]["embedding"]
    assert tuple(wte.sharding.spec) == ("tensor", "fsdp")
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "moved")
    for step in (3, 4):
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=1e-5), step
    for name, value in exported_params(tmp_path / "full").items():
        np.testing.assert_allclose(value, exported_params(tmp_path / "moved")[name], atol=1e-5)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    train_and_evaluate(tiny_config("hh", "tiny", num_train_steps=2), str(tmp_path))
    other = tiny_config("hh", "tiny", num_train_steps=4)
    other.model.random_init_config.n_embd = 32  # same architecture, other shapes
    with pytest.raises(ValueError, match="different model"):
        train_and_evaluate(other, str(tmp_path))
