"""`python -m dpo_jax.sample`: a tiny exported model and the shipped tokenizer give one completion per
prompt, greedy decoding is deterministic, a workdir stands for its exported policy, and a workdir with
checkpoints but no export yet for its newest checkpoint's policy."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpo_jax.checkpoint import CHECKPOINT_DIRNAME
from dpo_jax.data import load_tokenizer
from dpo_jax.models import from_hf, to_hf
from dpo_jax.models.loading import EXPORT_DIRNAME
from dpo_jax.sampling.prompts import encode_prompts, read_prompts, sample_completions
from dpo_jax.sampling.settings import SamplingSettings
from tests.analysis.test_saved_policy import unexported_run  # noqa: F401  (a fixture)
from tests.checkpoint.test_corrupt import truncate_array_files
from tests.synthetic.tiny_models import tiny_lm

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Human: hello there\n\nAssistant:", "the movie was", "a"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A finished-run layout: WORKDIR/export holds the model and the tiny tokenizer."""
    root = tmp_path_factory.mktemp("sample_run")
    model, params = tiny_lm("gpt2", 512, std=0.5, max_positions=64)
    to_hf(model, params, str(root / EXPORT_DIRNAME), tokenizer=load_tokenizer("tiny"))
    return root


def run_cli(*args, returncode: int = 0):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)  # one CPU device, as from a shell
    result = subprocess.run(
        [sys.executable, "-m", "dpo_jax.sample", *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert result.returncode == returncode, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_cli_prints_one_completion_per_prompt(workdir, tmp_path):
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    records, _ = run_cli(
        f"--workdir={workdir}",
        f"--prompts_file={prompts_file}",
        "--temperature=0",
        "--max_new_tokens=8",
        "--batch_size=2",
    )
    assert [r["prompt"] for r in records] == PROMPTS
    assert all(isinstance(r["completion"], str) for r in records)
    # Greedy: the same completions in-process, whatever the batch size (padding changes nothing).
    model, params = from_hf(str(workdir / EXPORT_DIRNAME))
    tokenizer = load_tokenizer("tiny")
    settings = SamplingSettings(temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=8)
    again = sample_completions(model, params, tokenizer, PROMPTS, settings=settings, batch_size=3, seed=5)
    assert again == [r["completion"] for r in records]


def test_text_prompts_and_left_padding(tmp_path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("first prompt\n\nsecond one here\n")
    assert read_prompts(str(prompts_file)) == ["first prompt", "second one here"]
    tokenizer = load_tokenizer("tiny")
    ids, mask = encode_prompts(tokenizer, ["a", "a longer prompt than that"], max_prompt_length=4)
    assert ids.shape == mask.shape and ids.shape[1] == 4
    assert np.all(mask[:, -1] == 1) and mask[0].sum() < mask[1].sum() == 4
    expected = tokenizer("a longer prompt than that", add_special_tokens=False)["input_ids"][-4:]
    assert ids[1].tolist() == expected  # too long: the end is kept


def test_sampling_follows_the_seed(workdir):
    model, params = from_hf(str(workdir / EXPORT_DIRNAME))
    tokenizer = load_tokenizer("tiny")
    settings = SamplingSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8)
    first = sample_completions(model, params, tokenizer, PROMPTS, settings=settings, batch_size=3, seed=1)
    assert first == sample_completions(
        model, params, tokenizer, PROMPTS, settings=settings, batch_size=3, seed=1
    )
    assert len(first) == len(PROMPTS)


def test_a_workdir_without_export_samples_its_newest_readable_checkpoint(unexported_run, tmp_path):  # noqa: F811
    source, model, params_at = unexported_run
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    truncate_array_files(workdir / CHECKPOINT_DIRNAME / "4")  # the newest step is damaged
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS[1:]) + "\n")
    records, stderr = run_cli(
        f"--workdir={workdir}", f"--prompts_file={prompts_file}", "--temperature=0", "--max_new_tokens=8"
    )
    assert f"checkpoint step 4 in {workdir / CHECKPOINT_DIRNAME} is unreadable" in stderr
    assert "has no export: sampling from its checkpoint at step 2" in stderr
    assert "Traceback" not in stderr and "Event loop is closed" not in stderr  # one warning, no noise
    settings = SamplingSettings(temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=8)
    tokenizer = load_tokenizer("tiny")  # the run's configured tokenizer
    expected = [
        sample_completions(model, params, tokenizer, PROMPTS[1:], settings=settings, batch_size=2, seed=0)
        for params in (params_at[2], params_at[4])
    ]
    assert expected[0] != expected[1]  # the two steps are told apart
    assert [r["completion"] for r in records] == expected[0]

    _, stderr = run_cli(f"--workdir={tmp_path}", f"--prompts_file={prompts_file}", returncode=2)
    assert stderr.splitlines()[-1].startswith(
        f"error: {tmp_path}: nothing to sample from: looked for an exported policy"
    )
    assert "Traceback" not in stderr


def test_an_out_of_range_sampling_value_is_one_error_line(tmp_path):
    """Before the typed settings a negative temperature sampled the inverted distribution."""
    _, stderr = run_cli(f"--workdir={tmp_path}", f"--prompts_file={tmp_path}/p.txt", "--temperature=-1", returncode=2)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]  # besides the runtime's notices
    assert errors == ["error: command line: flag --temperature=-1: must be a finite number >= 0 (0: greedy)"]
    assert stderr.splitlines()[-1] == errors[0] and "Traceback" not in stderr


def test_a_bad_prompt_file_or_an_empty_workdir_is_one_error_line(workdir, tmp_path):
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text('{"prompt": "fine"}\n{"prompt": null}\n')
    _, stderr = run_cli(f"--workdir={workdir}", f"--prompts_file={prompts_file}", returncode=2)
    assert f"error: {prompts_file}, line 2: field `prompt` is null, not a string\n" in stderr
    assert "Traceback" not in stderr
    empty = tmp_path / "killed_before_its_first_checkpoint"
    (empty / CHECKPOINT_DIRNAME).mkdir(parents=True)
    (tmp_path / "p.txt").write_text("hi\n")
    _, stderr = run_cli(f"--workdir={empty}", f"--prompts_file={tmp_path / 'p.txt'}", returncode=2)
    assert stderr.rstrip().splitlines()[-1].startswith(f"error: {empty}: nothing to sample from")
    assert "checkpoint_manager" not in stderr and "Traceback" not in stderr  # no Orbax warnings before it
