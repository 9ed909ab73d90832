"""Building a Flax module from a `ModelConfig`, and its params (random, abstract) and decoding cache."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from dpo_jax.models.config import ModelConfig
from dpo_jax.models.gpt2 import GPT2LMHeadModel
from dpo_jax.models.gpt_neox import GPTNeoXForCausalLM
from dpo_jax.models.gptj import GPTJForCausalLM

_MODEL_CLASSES = {"gpt2": GPT2LMHeadModel, "gpt_neox": GPTNeoXForCausalLM, "gptj": GPTJForCausalLM}


def model_class(arch: str) -> type[nn.Module]:
    """The language-model class of an architecture ("gpt2", "gpt_neox", "gptj")."""
    return _MODEL_CLASSES[arch]


def build_model(config: ModelConfig) -> nn.Module:
    return model_class(config.arch)(config)


def _init_fn(model: nn.Module):
    def init(rng):
        ids = jnp.zeros((1, 8), jnp.int32)
        return model.init(rng, ids)["params"]

    return init


def abstract_params(model: nn.Module, *, boxed: bool = False):
    """Shapes and dtypes of the params without allocating them (boxed: with logical axis names).

    Worked out once per model (a module equals another of the same class and config): tracing its init
    takes ~0.1 s, and an evaluation asks again for every checkpoint, temperature and placement. Each
    call gets its own containers around the shared (immutable) shape leaves."""
    try:
        tree = _abstract_boxed_params(model)
    except TypeError:  # a module with an unhashable field: traced every time
        tree = jax.eval_shape(_init_fn(model), jax.random.PRNGKey(0))
    tree = jax.tree_util.tree_map(lambda leaf: leaf, tree)
    return tree if boxed else nn.meta.unbox(tree)


@functools.lru_cache(maxsize=16)
def _abstract_boxed_params(model: nn.Module):
    return jax.eval_shape(_init_fn(model), jax.random.PRNGKey(0))


def init_params(model: nn.Module, rng: jax.Array, *, boxed: bool = False):
    """Random initial params (normal(0.02) weights, unit norms), as a fresh model would start."""
    tree = _init_fn(model)(rng)
    return tree if boxed else nn.meta.unbox(tree)


def init_fn(model: nn.Module):
    """rng -> boxed params: for `jax.eval_shape` and `jax.jit(..., out_shardings=...)` sharded init."""
    return _init_fn(model)


def init_cache(model: nn.Module, batch_size: int, max_length: int):
    """A zeroed key/value cache for `model.apply(..., decode=True, mutable=["cache"])`."""
    ids = jnp.zeros((batch_size, max_length), jnp.int32)

    def make(rng):
        return model.init(rng, ids, jnp.ones_like(ids), ids, decode=True)["cache"]

    shapes = jax.eval_shape(make, jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.meta.unbox(shapes))
