"""The commands' device memory setting: set when absent, never overriding the user's."""

from dpo_jax.config.runtime import apply_device_memory_settings


def test_sets_the_default_and_keeps_what_the_user_chose(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    assert apply_device_memory_settings() == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"}
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.8")
    assert apply_device_memory_settings() == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.8"}
