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
    BlockStack,
    CausalAttentionCore,
    Embed,
    LayerNorm,
    Linear,
    activation_fn,
    dropout,
    resolve_position_ids,
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
        out = CausalAttentionCore(scale=hd**-0.5, decode=self.decode, name="core")(q, k, v, attention_mask)
        return Linear((h, hd, d), ("heads", "kv", "embed"), num_contract=2, name="dense", **kw)(out)


class GPTNeoXMLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        d, f = cfg.hidden_size, cfg.intermediate_size
        x = Linear((d, f), ("embed", "mlp"), name="dense_h_to_4h", **kw)(hidden)
        x = activation_fn(cfg.activation)(x)
        return Linear((f, d), ("mlp", "embed"), name="dense_4h_to_h", **kw)(x)


class GPTNeoXBlock(nn.Module):
    config: ModelConfig
    layer_idx: int = 0
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, hidden, attention_mask, position_ids):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        attn_in = LayerNorm(cfg.layer_norm_eps, name="input_layernorm", **kw)(hidden)
        attn = GPTNeoXAttention(cfg, self.decode, name="attention")(attn_in, attention_mask, position_ids)
        attn = dropout(cfg, attn, self.deterministic)
        post_ln = LayerNorm(cfg.layer_norm_eps, name="post_attention_layernorm", **kw)
        mlp = GPTNeoXMLP(cfg, name="mlp")
        if cfg.use_parallel_residual:
            # x + attn(ln1(x)) + mlp(ln2(x))
            hidden = hidden + attn + dropout(cfg, mlp(post_ln(hidden)), self.deterministic)
        else:
            hidden = hidden + attn
            hidden = hidden + dropout(cfg, mlp(post_ln(hidden)), self.deterministic)
        return nn.with_logical_constraint(
            hidden, ("activation_batch", "activation_length", "activation_embed")
        ), None


class GPTNeoXForCausalLM(nn.Module):
    """`apply({"params": p}, input_ids, attention_mask=..., position_ids=...) -> logits [B, L, V]`."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        *,
        deterministic: bool = True,
        decode: bool = False,
        return_hidden: bool = False,
    ):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        position_ids = resolve_position_ids(input_ids, attention_mask, position_ids, decode=decode)
        embed_in = Embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), name="embed_in", **kw)
        hidden = dropout(cfg, embed_in(input_ids), deterministic)
        hidden = BlockStack(cfg, GPTNeoXBlock, deterministic, decode, name="layers")(
            hidden, attention_mask, position_ids
        )
        hidden = LayerNorm(cfg.layer_norm_eps, name="final_layer_norm", **kw)(hidden)
        if return_hidden:
            return hidden
        if cfg.tie_word_embeddings:
            return embed_in.attend(hidden)
        head = Linear(
            (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), use_bias=False, name="embed_out", **kw
        )
        return head(hidden)

    def output_embedding(self, params) -> jax.Array:
        if self.config.tie_word_embeddings:
            return params["embed_in"]["embedding"].T
        return params["embed_out"]["kernel"]
