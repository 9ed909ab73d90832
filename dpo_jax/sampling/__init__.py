"""Sampling from our models: `generate` (jitted, KV cache, temperature / top-k / top-p, as one validated
`SamplingSettings`) and the text-level helpers that turn prompt files into completions (`prompts`)."""

from dpo_jax.sampling.generate import generate
from dpo_jax.sampling.settings import SamplingSettings

__all__ = ["SamplingSettings", "generate"]
