"""The commands' device memory settings: set when absent, never overriding the user's."""

from dpo_jax.config.runtime import apply_device_memory_settings


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
