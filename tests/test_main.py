"""`python -m dpo_jax.main`: a mistake in the command line, config, data or workdir is one line and exit 2
(a mistyped or unparsable flag before anything runs: no workdir is made)."""

import pytest

from tests.train_helpers import run_main


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--config.betta=0.5"], 'error: command line: \'betta\' Did you mean "beta" instead of "betta"?'),
        (["--config.beta=abc"], "error: command line: flag --config.beta=abc: could not convert string to float"),
        (["--config.beta=-1"], "error: beta=-1.0 must be a number > 0"),
        (["--config.data.path=/no/such/pairs.jsonl"], "error: data path '/no/such/pairs.jsonl' does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, overrides, message):
    result = run_main(tmp_path / "run", *overrides, "--config.num_train_steps=1", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(message), line
    if message.startswith("error: command line:"):
        assert not (tmp_path / "run").exists()  # refused before anything ran


def test_a_missing_config_file_is_a_user_error(tmp_path):
    result = run_main(tmp_path, config="configs/nope.py", timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: command line:" in result.stderr and "configs/nope.py" in result.stderr
