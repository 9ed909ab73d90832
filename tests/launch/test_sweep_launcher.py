import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SWEEP = REPO_ROOT / "launch" / "sweep.py"


def run_sweep(*args, cwd=REPO_ROOT):
    return subprocess.run(
        [sys.executable, str(SWEEP), *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_print_mode_writes_one_command_per_beta(tmp_path):
    result = run_sweep(
        "--config=configs/tldr.py:tiny",
        f"--workdir_root={tmp_path}",
        "--betas=0.1,1",
        "--mode=print",
        "--config.learning_rate=1e-6",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"python -m dpo_jax.main --config=configs/tldr.py:tiny --workdir={tmp_path}/beta_0.1 "
        "--config.beta=0.1 --config.learning_rate=1e-6",
        f"python -m dpo_jax.main --config=configs/tldr.py:tiny --workdir={tmp_path}/beta_1.0 "
        "--config.beta=1.0 --config.learning_rate=1e-6",
    ]


def test_alpha_sweep_runs_the_unlikelihood_baseline_once_per_alpha(tmp_path):
    """The paper's unlikelihood points: one run per weight alpha (0 included: preferred-FT)."""
    (tmp_path / "alpha_0.5").mkdir()
    (tmp_path / "alpha_0.5" / "FINISHED").write_text("")
    result = run_sweep("--config=configs/imdb.py", f"--workdir_root={tmp_path}", "--alphas=0,0.1,0.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"python -m dpo_jax.main --config=configs/imdb.py --workdir={tmp_path}/alpha_{alpha} "
        f"--config.loss=unlikelihood --config.unlikelihood_alpha={alpha}"
        for alpha in ("0.0", "0.1")
    ]
    assert "skipping alpha=0.5" in result.stderr


def test_default_betas_and_gcs_roots_keep_their_scheme():
    result = run_sweep("--config=configs/tldr.py", "--workdir_root=gs://bucket/sweep/")
    workdirs = [line.split("--workdir=")[1].split()[0] for line in result.stdout.splitlines()]
    assert workdirs == [f"gs://bucket/sweep/beta_{beta}" for beta in ("0.05", "0.1", "0.25", "0.5", "1.0")]


def test_finished_betas_are_skipped_unless_forced(tmp_path):
    (tmp_path / "beta_0.1").mkdir()
    (tmp_path / "beta_0.1" / "FINISHED").write_text("")
    args = ("--config=c.py", f"--workdir_root={tmp_path}", "--betas=0.1,0.2")
    skipped = run_sweep(*args)
    assert [line.split("--config.beta=")[1] for line in skipped.stdout.splitlines()] == ["0.2"]
    assert "skipping beta=0.1" in skipped.stderr
    assert len(run_sweep(*args, "--force").stdout.splitlines()) == 2


def test_local_mode_runs_the_module_once_per_beta_and_reports_failures(tmp_path):
    result = run_sweep(
        "--config=configs/tldr.py:tiny",
        f"--workdir_root={tmp_path}",
        "--betas=0.1,0.5,1.0",
        "--mode=local",
        "--module=tests.launch.fake_main",
        "--config.seed=3",
    )
    assert result.returncode == 1
    assert "failed for betas ['0.5']" in result.stderr
    for beta in ("0.1", "0.5", "1.0"):
        argv = json.loads((tmp_path / f"beta_{beta}" / "argv.json").read_text())
        assert argv == [
            "--config=configs/tldr.py:tiny",
            f"--workdir={tmp_path}/beta_{beta}",
            f"--config.beta={beta}",
            "--config.seed=3",
        ]


@pytest.mark.parametrize(
    "bad_args, message",
    [
        (["--betas=0.1,abc"], "'abc' is not a number"),
        (["--betas=0.1,-1"], "'-1' must be positive"),
        (["--betas=0.1,0.10"], "lists a beta twice"),
        (["--config.beta=0.3"], "--config.beta is set by the sweep"),
        (["--learning_rate=1"], "unrecognised arguments"),
        (["--alphas=0.1,-1"], "'-1' must be a finite number >= 0"),
        (["--alphas=0.1", "--betas=0.1"], "a sweep varies one setting"),
        (["--alphas=0.1", "--config.loss=dpo"], "--config.loss is set by the sweep"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, bad_args, message):
    result = run_sweep("--config=c.py", f"--workdir_root={tmp_path}", *bad_args)
    assert result.returncode == 2
    assert message in result.stderr


def test_sweep_does_not_import_jax():
    probe = (
        "import sys; sys.argv = ['sweep', '--config=c.py', '--workdir_root=/tmp/x']; "
        f"sys.path.insert(0, {str(SWEEP.parent)!r}); import sweep; sweep.main(); "
        "print('jax' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "False"
