"""The commands' device memory settings: set when absent, never overriding the user's; when they join
the multi-host runtime, and the one flag table every command declares for it."""

import pytest

from dpo_jax import frontier, judge_agreement, make_pairs, sample, winrate
from dpo_jax.config.runtime import DISTRIBUTED_FLAGS, apply_device_memory_settings, wants_distributed


def test_sets_the_defaults_and_keeps_what_the_user_chose(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert apply_device_memory_settings() == {
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_gpu_memory_limit_slop_factor=100",
    }
    # Applying twice adds nothing; the user's own values stay.
    assert apply_device_memory_settings()["XLA_FLAGS"].count("slop_factor") == 1
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.8")
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_memory_limit_slop_factor=90")
    assert apply_device_memory_settings() == {
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.8",
        "XLA_FLAGS": "--xla_gpu_memory_limit_slop_factor=90",
    }


@pytest.mark.parametrize(
    "environ, wanted",
    [
        ({}, False),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0"}, False),  # a single-host slice
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0,t1k-w-1"}, True),
        ({"SLURM_NTASKS": "1"}, False),
        ({"SLURM_NTASKS": "4"}, True),
    ],
)
def test_auto_joins_when_the_environment_asks(environ, wanted):
    assert wants_distributed("auto", environ) is wanted
    assert wants_distributed("on", environ) and not wants_distributed("off", environ)


@pytest.mark.parametrize("command", [sample, make_pairs, winrate, frontier, judge_agreement])
def test_every_evaluation_command_takes_the_distributed_flags(command):
    assert set(DISTRIBUTED_FLAGS) <= set(command.FLAGS)


class _Joined(Exception):
    """Raised where a command would join the multi-host runtime: the test stops there."""


@pytest.mark.parametrize("command", [sample, make_pairs, winrate, frontier, judge_agreement])
def test_every_evaluation_command_applies_the_device_memory_settings_first(command, monkeypatch):
    calls = []
    monkeypatch.setattr(command, "apply_device_memory_settings", lambda: calls.append("memory"))

    def initialize(*args):
        calls.append("distributed")
        raise _Joined

    monkeypatch.setattr(command, "initialize_distributed", initialize)
    monkeypatch.setattr(command, "parse_args", lambda argv: _Flags())
    with pytest.raises(_Joined):
        command.main(["command"])
    assert calls == ["memory", "distributed"]


class _Flags:
    distributed, distributed_timeout_s = "off", 1
