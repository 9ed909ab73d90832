"""The run config's schema: every field with its default (`defaults.base_config`)."""

from dpo_jax.config.defaults import base_config

__all__ = ["base_config"]
