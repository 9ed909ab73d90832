"""The commands' device memory settings: set when absent, never overriding the user's."""

from dpo_jax.config.runtime import apply_device_memory_settings


def test_sets_defaults_and_keeps_what_the_user_chose(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    settings = apply_device_memory_settings()
    assert settings["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.95"
    assert settings["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=8 --xla_gpu_memory_limit_slop_factor=95"
    )
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.8")
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_memory_limit_slop_factor=90")
    settings = apply_device_memory_settings()
    assert settings == {
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.8",
        "XLA_FLAGS": "--xla_gpu_memory_limit_slop_factor=90",
    }
