"""GPT-NeoX (Pythia) language model in Flax linen.

Partial rotary embeddings (`rotary_pct` of each head, rotate-half convention, `rotary_emb_base`),
parallel or sequential residual, untied output head, and the checkpoints' fused QKV layout:
the query_key_value output is [heads, 3, head_dim], per head, not [3, heads, head_dim].
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


def apply_rotary(x: jax.Array, position_ids: jax.Array, rotary_dim: int, base: float) -> jax.Array:
    """Rotate the first `rotary_dim` features of x [B, L, H, D] by position; the rest pass through."""
    inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [B, L, rotary_dim/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated_half = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    return jnp.concatenate([x_rot * cos + rotated_half * sin, x_pass], axis=-1)


class GPTNeoXAttention(nn.Module):
    config: ModelConfig
    decode: bool = False

    @nn.compact
    def __call__(self, hidden, attention_mask, position_ids):
        cfg = self.config
        h, hd, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype, use_bias=cfg.attention_bias)
        qkv = Linear((d, h, 3, hd), ("embed", "heads", "qkv", "kv"), name="query_key_value", **kw)(hidden)
        q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
        q = apply_rotary(q, position_ids, cfg.rotary_dim, cfg.rotary_emb_base)
        k = apply_rotary(k, position_ids, cfg.rotary_dim, cfg.rotary_emb_base)
        out = CausalAttentionCore(hd**-0.5, self.decode, cfg.attention, name="core")(q, k, v, attention_mask)
        return Linear((h, hd, d), ("heads", "kv", "embed"), num_contract=2, name="dense", **kw)(out)


class GPTNeoXBlock(Block):
    @nn.compact
    def __call__(self, hidden, attention_mask, position_ids):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        attn_in = LayerNorm(cfg.layer_norm_eps, name="input_layernorm", **kw)(hidden)
        attn = GPTNeoXAttention(cfg, self.decode, name="attention")(attn_in, attention_mask, position_ids)
        attn = dropout(cfg, attn, self.deterministic)
        post_ln = LayerNorm(cfg.layer_norm_eps, name="post_attention_layernorm", **kw)
        mlp = MLP(cfg, "dense_h_to_4h", "dense_4h_to_h", name="mlp")
        if cfg.use_parallel_residual:
            # x + attn(ln1(x)) + mlp(ln2(x))
            hidden = hidden + attn + dropout(cfg, mlp(post_ln(hidden)), self.deterministic)
        else:
            hidden = hidden + attn
            hidden = hidden + dropout(cfg, mlp(post_ln(hidden)), self.deterministic)
        return constrain_hidden(hidden), None


class GPTNeoXForCausalLM(CausalLM):
    """GPT-NeoX (Pythia): rotary positions inside attention, untied `embed_out` head (see `CausalLM`)."""

    block_cls = GPTNeoXBlock
    embed_name = "embed_in"
    stack_name = "layers"
    final_norm_name = "final_layer_norm"
