import os
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


@pytest.mark.parametrize("script", ["tpu_vm.sh", "slurm_gpu.sbatch"])
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)


def dry_run(*args, **env):
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return result.stdout.splitlines()


def test_dry_run_create_and_delete_print_the_gcloud_commands():
    (create,) = dry_run("create", TPU_NAME="pod", ZONE="us-east5-a", ACCELERATOR_TYPE="v5p-32", SPOT="1")
    assert create == (
        "gcloud compute tpus tpu-vm create pod --zone=us-east5-a --accelerator-type=v5p-32 "
        "--version=tpu-ubuntu2204-base --spot"
    )
    (delete,) = dry_run("delete", TPU_NAME="pod", ZONE="us-east5-a")
    assert delete.startswith("gcloud compute tpus tpu-vm delete pod --zone=us-east5-a")


def test_dry_run_setup_installs_on_all_workers():
    commands = dry_run("setup", REPO_URL="https://example.com/dpo_jax.git", REPO_REF="v1")
    assert commands
    assert all("--worker=all" in command for command in commands)
    assert "git clone https://example.com/dpo_jax.git dpo_jax" in commands[0]
    assert "pip install -e ~/dpo_jax" in commands[-1] and "jax[tpu]" in commands[-1]


def test_dry_run_run_launches_the_same_command_on_all_workers():
    (command,) = dry_run(
        "run", "--", "--config.beta=0.5", CONFIG="configs/tldr.py", WORKDIR="gs://bucket/run", PROJECT="proj"
    )
    assert command.startswith("gcloud compute tpus tpu-vm ssh dpo-jax --zone=us-central2-b --project=proj")
    assert "--worker=all" in command
    assert (
        "python -m dpo_jax.main --config=configs/tldr.py --workdir=gs://bucket/run "
        "'\\''--config.mesh_shape=(1,4,1)'\\'' --config.beta=0.5" in command
    )


@pytest.mark.parametrize(
    "accelerator, layout",
    [
        ("v4-8", "(1,4,1)'\\''"),  # 4 chips (v4 counts TensorCores)
        ("v5litepod-16", "(1,16,1)'\\''"),
        ("v5p-64", "(1,32,1)'\\'' --config.grad_accum_steps=2"),  # micro-batches of 32 pairs
    ],
)
def test_run_shards_over_every_chip_of_the_slice(accelerator, layout):
    (command,) = dry_run("run", ACCELERATOR_TYPE=accelerator)
    assert "--config.mesh_shape=" + layout in command


@pytest.mark.parametrize("accelerator", ["v5litepod-8", "v4-32", "v5litepod-16"])
def test_dry_run_recipe_runs_the_experiment_on_every_worker_led_by_worker_0(accelerator):
    (command,) = dry_run(
        "recipe", "--", "--recipe.betas=0.1,0.5", RECIPE="imdb", ACCELERATOR_TYPE=accelerator, RECIPE_SESSION="s7"
    )
    assert command.startswith("gcloud compute tpus tpu-vm ssh dpo-jax --zone=us-central2-b --worker=all ")
    assert (
        "python -m dpo_jax.experiment --recipe=imdb --scale=paper --workdir=../recipes/imdb --recipe.session=s7 "
        "--recipe.worker=$(curl -sf -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/"
        "instance/attributes/agent-worker-number || echo unknown) --recipe.betas=0.1,0.5" in command
    )


def test_unknown_subcommand_fails():
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", "resize"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown subcommand 'resize'" in result.stderr
