"""Shared by the trainer tests: tiny configs, reading metrics.jsonl, running `dpo_jax.main` as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def xla_flags_for_tests(devices: int = 8) -> str:
    """XLA_FLAGS of every test process (tests/conftest.py sets them for pytest's own, `process_env` for the
    commands the tests start): `devices` fake CPU devices, and LLVM's optimisation of the CPU machine
    code off. XLA's own passes (fusion, sharding, collectives, buffer assignment) run as before, so the
    programs the tests inspect are the same; their tiny models run in milliseconds either way, and
    compiling takes about half the time (docs/testing.md, "Compiling small")."""
    return f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"


def tiny_config(config_file: str = "hh", variant: str = "tiny", **overrides):
    import importlib

    config = importlib.import_module(f"configs.{config_file}").get_config(variant)
    config.tensorboard = False
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


def read_metrics(workdir) -> dict[int, dict]:
    """step -> merged train record (the last one written for that step wins: a resumed run rewrites)."""
    records: dict[int, dict] = {}
    for line in Path(workdir, "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            records[record["step"]] = record
    return records


def train_losses(workdir) -> list[float]:
    records = read_metrics(workdir)
    return [records[s]["loss"] for s in sorted(records)]


def exported_params(workdir) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(Path(workdir, "export", "model.safetensors")))


def main_command(workdir, config: str = "configs/hh.py:tiny", *overrides: str) -> list[str]:
    return [sys.executable, "-m", "dpo_jax.main", f"--config={config}", f"--workdir={workdir}", *overrides]


def process_env(devices: int = 8, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=xla_flags_for_tests(devices),
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
    )
    env.update(extra)
    return env


def run_main(workdir, *overrides: str, config: str = "configs/hh.py:tiny", timeout: int = 300, env=None):
    result = subprocess.run(
        main_command(workdir, config, *overrides),
        cwd=REPO,
        env=env or process_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a jax.distributed coordinator)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_worker_processes(script, args: list[str], *, devices: int, count: int = 2, timeout: int = 600):
    """Runs `python script <process_id> <args...>` `count` times at once, each with `devices` fake CPU
    devices; asserts every one exits 0 and returns their stdouts, in process order."""
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(process_id), *args],
            env=process_env(devices),
            # Separate pipes: gloo's C++ logging on stderr must not split the lines the workers print.
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for process_id in range(count)
    ]
    try:
        results = [worker.communicate(timeout=timeout) for worker in workers]
    except subprocess.TimeoutExpired:  # one waits on the other: kill both and show what each had said
        for worker in workers:
            worker.kill()
        said = [f"process {i}:\n{out[-2000:]}{err[-2000:]}" for i, (out, err) in enumerate(w.communicate() for w in workers)]
        raise AssertionError(f"the {count} processes did not finish in {timeout} s\n" + "\n".join(said)) from None
    for worker, (output, errors) in zip(workers, results):
        assert worker.returncode == 0, output + errors[-4000:]
    return [output for output, _ in results]


def run_command_processes(
    per_process_args, *, devices: int = 4, timeout: int = 600
) -> list[subprocess.CompletedProcess]:
    """`python -m <per_process_args[i]...>` as process i of len(per_process_args), joined by
    jax.distributed through the environment (JAX_COORDINATOR_ADDRESS on 127.0.0.1, JAX_NUM_PROCESSES,
    JAX_PROCESS_ID), as the commands' --distributed=auto reads it; each has `devices` fake CPU devices."""
    count, address = len(per_process_args), f"127.0.0.1:{free_port()}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=process_env(
                devices,
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES=str(count),
                JAX_PROCESS_ID=str(process_id),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for process_id, args in enumerate(per_process_args)
    ]
    done = [worker.communicate(timeout=timeout) for worker in workers]
    return [subprocess.CompletedProcess(w.args, w.returncode, out, err) for w, (out, err) in zip(workers, done)]
