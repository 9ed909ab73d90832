"""GPT-J language model in Flax linen (the paper's TL;DR policy, GPT-J-6B).

Rotary embeddings on the first `rotary_dim` features of each head in GPT-J's interleaved layout
(features 2i and 2i+1 form a pair, not i and i + rotary_dim/2 as in GPT-NeoX), separate bias-free
q / k / v / out projections, one layer norm feeding attention and MLP in parallel
(x + attn(ln(x)) + mlp(ln(x))), and an untied output head with a bias. Parameter names follow the
Hugging Face checkpoint (wte, h, ln_1, attn.q_proj, mlp.fc_in, ln_f, lm_head -> `embed_out`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dpo_jax.models.config import ModelConfig
from dpo_jax.models.layers import (
    MLP,
    Block,
    CausalAttentionCore,
    CausalLM,
    LayerNorm,
    Linear,
    constrain_hidden,
    dropout,
)

ROTARY_BASE = 10000.0  # transformers' GPT-J hard-codes it (create_sinusoidal_positions)


def apply_interleaved_rotary(x: jax.Array, position_ids: jax.Array, rotary_dim: int) -> jax.Array:
    """Rotate the first `rotary_dim` features of x [B, L, H, D] by position, pairing features 2i and
    2i+1 (GPT-J's `rotate_every_two`); the rest pass through. The angles are computed in fp32 and the
    sin / cos cast to x's dtype, as transformers does."""
    inv_freq = 1.0 / (ROTARY_BASE ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [B, L, rotary_dim/2]
    cos = jnp.cos(angles).astype(x.dtype)[:, :, None, :]
    sin = jnp.sin(angles).astype(x.dtype)[:, :, None, :]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    pairs = x_rot.reshape(*x_rot.shape[:-1], rotary_dim // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = jnp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
    return jnp.concatenate([rotated.reshape(x_rot.shape), x_pass], axis=-1)


class GPTJAttention(nn.Module):
    config: ModelConfig
    decode: bool = False

    @nn.compact
    def __call__(self, hidden, attention_mask, position_ids):
        cfg = self.config
        h, hd, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype, use_bias=False)

        def project(name):
            return Linear((d, h, hd), ("embed", "heads", "kv"), name=name, **kw)(hidden)

        q = apply_interleaved_rotary(project("q_proj"), position_ids, cfg.rotary_dim)
        k = apply_interleaved_rotary(project("k_proj"), position_ids, cfg.rotary_dim)
        v = project("v_proj")
        out = CausalAttentionCore(hd**-0.5, self.decode, cfg.attention, name="core")(q, k, v, attention_mask)
        return Linear((h, hd, d), ("heads", "kv", "embed"), num_contract=2, name="out_proj", **kw)(out)


class GPTJBlock(Block):
    @nn.compact
    def __call__(self, hidden, attention_mask, position_ids):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        x = LayerNorm(cfg.layer_norm_eps, name="ln_1", **kw)(hidden)
        attn = GPTJAttention(cfg, self.decode, name="attn")(x, attention_mask, position_ids)
        mlp = MLP(cfg, "fc_in", "fc_out", name="mlp")(x)
        hidden = hidden + dropout(cfg, attn, self.deterministic) + dropout(cfg, mlp, self.deterministic)
        return constrain_hidden(hidden), None


class GPTJForCausalLM(CausalLM):
    """GPT-J: rotary positions inside attention, untied `embed_out` head with a bias (see `CausalLM`)."""

    block_cls = GPTJBlock
    embed_name = "wte"
    stack_name = "h"
    final_norm_name = "ln_f"
    head_bias = True
