"""Sampling from our models: `generate` (jitted, KV cache, temperature / top-k / top-p) and the text-level
helpers that turn prompt files into completions (`prompts`)."""

from dpo_jax.sampling.generate import generate

__all__ = ["generate"]
