"""A non-editable install works on its own: the commands run from outside the repository.

`pip install .` copies only the `dpo_jax` package (with its shipped tokenizer and fixtures), not the
repository's `configs/` directory; a command that imported `configs` would fail there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.train_helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    # A copy of the tracked files, so the build never writes into the checkout (build/, egg-info).
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in files.split():
        source, destination = REPO / name, build / name
        if source.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read_bytes())
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), "."],
        cwd=build,
        check=True,
        capture_output=True,
    )
    return target


def run_outside(installed, tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=str(installed), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def test_installed_package_has_no_configs_and_ships_its_assets(installed, tmp_path):
    result = run_outside(
        installed,
        tmp_path,
        "-c",
        "import importlib.util, dpo_jax, dpo_jax.data; "
        "print(dpo_jax.__file__); print(importlib.util.find_spec('configs')); "
        "print(dpo_jax.data.fixture_dir('hh'))",
    )
    assert result.returncode == 0, result.stderr
    package_file, configs_spec, fixture = result.stdout.split()
    assert package_file.startswith(str(installed))
    assert configs_spec == "None"
    assert fixture.startswith(str(installed))


def test_bench_runs_from_a_non_editable_install(installed, tmp_path):
    result = run_outside(
        installed,
        tmp_path,
        "-m",
        "dpo_jax.bench",
        "--model=tiny",
        "--pairs=8",
        "--seq=64",
        "--steps=2",
        "--warmup=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    record = json.loads(lines[-1][len("RESULT ") :])
    assert record["model"] == "tiny" and record["steps"] == 2 and record["tokens_per_second"] > 0
