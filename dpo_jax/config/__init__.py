"""The run config's schema: every field with its default (`defaults.base_config`).

`base_config` is imported on first use, so that a command's flags (`config.command_line`) are parsed
before anything imports jax: `experiment --dry_run` and `aot` set JAX_PLATFORMS from them.
"""

__all__ = ["base_config"]


def __getattr__(name: str):
    if name == "base_config":
        from dpo_jax.config.defaults import base_config

        return base_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
