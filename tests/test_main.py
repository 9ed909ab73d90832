"""`python -m dpo_jax.main`: a mistake in the command line, config, data or workdir is one line and exit 2,
said before the run creates its workdir; `--help` shows the usage and the config variants."""

import subprocess
import sys

import pytest

from tests.train_helpers import REPO, process_env, run_main


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--config.betta=0.5"], 'error: command line: \'betta\' Did you mean "beta" instead of "betta"?'),
        (
            ["--config.beta=abc"],
            "error: command line: flag --config.beta=abc: could not convert string to float",
        ),
        (["--config.beta=-1"], "error: beta=-1.0 must be a number > 0"),
        (
            ["--config.data.path=/no/such/pairs.jsonl"],
            "error: data path '/no/such/pairs.jsonl' does not exist",
        ),
        (
            ["--config.model.name_or_path=/no/such/model"],
            "error: --config.model.name_or_path=/no/such/model: model directory /no/such/model does not exist; "
            "pass a local model directory",
        ),
        (
            # a hub name that cannot be had (offline here, so no retries): the hint, not a traceback
            ["--config.model.name_or_path=nobody/no-such-model", "--config.tokenizer=tiny"],
            "error: --config.model.name_or_path=nobody/no-such-model: cannot be loaded from the Hugging Face hub",
        ),
        (
            ["--config.tokenizer=/no/such/tokenizer"],
            "error: tokenizer '/no/such/tokenizer' cannot be loaded (",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, overrides, message):
    env = {**process_env(), "HF_HUB_OFFLINE": "1"}
    result = run_main(tmp_path / "run", *overrides, "--config.num_train_steps=1", timeout=300, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(message), line
    assert not (tmp_path / "run").exists()  # checked before anything was created


def test_a_config_variant_typo_is_one_short_line(tmp_path):
    result = run_main(tmp_path / "run", config="configs/hh.py:sft,tinyy", timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        "unknown config variant tinyy (variants: sft, tiny, neox, gptj, pythia, precompute)" in line and len(line) < 200
    ), line


def test_help_shows_usage_and_config_variants_and_exits_0():
    from configs.common import VARIANTS

    result = subprocess.run(
        [sys.executable, "-m", "dpo_jax.main", "--help"], cwd=REPO, env=process_env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--config=configs/hh.py:sft,tiny" in result.stdout and "--workdir" in result.stdout
    assert all(f"{variant} (" in result.stdout for variant in VARIANTS), result.stdout


def test_a_missing_config_file_is_a_user_error(tmp_path):
    result = run_main(tmp_path, config="configs/nope.py", timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(
        "error: command line: --config=configs/nope.py: no such file configs/nope.py (configs"
    )
    assert "configs/hh.py" in line and not tmp_path.joinpath("checkpoints").exists()
