"""Tiny random GPT-2 / GPT-NeoX models for the sampling and synthetic-task tests.

Params are drawn with numpy from the model's abstract shapes: compiling flax's init (or running it
op by op) costs seconds on a small shared CPU, which would dominate these tests.
"""

import functools

import jax
import numpy as np

from dpo_jax.models import ModelConfig, abstract_params, build_model


@functools.cache
def tiny_lm(arch: str, vocab_size: int, *, seed: int = 0, std: float = 0.3, max_positions: int = 32):
    """(model, params): one layer, width 16; `std` sets how peaked the next-token distributions are."""
    config = ModelConfig(
        arch=arch,
        vocab_size=vocab_size,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
    )
    model = build_model(config)
    return model, random_params(model, seed=seed, std=std)


def random_params(model, *, seed: int, std: float):
    """Params of `model` drawn with numpy: normal(0, std), norm scales normal(1, std)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        # Norm scales near 1 keep the residual stream well scaled; everything else is random.
        centre = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
        return (centre + std * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract_params(model))
