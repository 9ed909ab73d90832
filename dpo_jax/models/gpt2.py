"""GPT-2 language model in Flax linen: learned positions, pre-LN blocks, gelu_new, tied output head.

Parameter names follow the Hugging Face checkpoint (wte, wpe, ln_1, attn.c_attn, ...) so the
converter in `hf_io` is a reshape per tensor, never a search.
"""

from __future__ import annotations

import flax.linen as nn
import jax

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


class GPT2Attention(nn.Module):
    config: ModelConfig
    layer_idx: int = 0
    decode: bool = False

    @nn.compact
    def __call__(self, hidden, attention_mask):
        cfg = self.config
        h, hd, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        qkv = Linear((d, 3, h, hd), ("embed", "qkv", "heads", "kv"), name="c_attn", **kw)(hidden)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scale = hd**-0.5 if cfg.scale_attn_weights else 1.0
        if cfg.scale_attn_by_inverse_layer_idx:
            scale /= self.layer_idx + 1
        out = CausalAttentionCore(scale=scale, decode=self.decode, name="core")(q, k, v, attention_mask)
        return Linear((h, hd, d), ("heads", "kv", "embed"), num_contract=2, name="c_proj", **kw)(out)


class GPT2MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        x = Linear((cfg.hidden_size, cfg.intermediate_size), ("embed", "mlp"), name="c_fc", **kw)(hidden)
        x = activation_fn(cfg.activation)(x)
        return Linear((cfg.intermediate_size, cfg.hidden_size), ("mlp", "embed"), name="c_proj", **kw)(x)


class GPT2Block(nn.Module):
    config: ModelConfig
    layer_idx: int = 0
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, hidden, attention_mask, position_ids):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        x = LayerNorm(cfg.layer_norm_eps, name="ln_1", **kw)(hidden)
        x = GPT2Attention(cfg, self.layer_idx, self.decode, name="attn")(x, attention_mask)
        hidden = hidden + dropout(cfg, x, self.deterministic)
        x = LayerNorm(cfg.layer_norm_eps, name="ln_2", **kw)(hidden)
        x = GPT2MLP(cfg, name="mlp")(x)
        hidden = hidden + dropout(cfg, x, self.deterministic)
        return nn.with_logical_constraint(
            hidden, ("activation_batch", "activation_length", "activation_embed")
        ), None


class GPT2LMHeadModel(nn.Module):
    """`apply({"params": p}, input_ids, attention_mask=..., position_ids=...) -> logits [B, L, V]`.

    `return_hidden=True` returns the final hidden states [B, L, D] instead, for losses that project
    onto the vocabulary in chunks (see `output_embedding`).
    """

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
        wte = Embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), name="wte", **kw)
        wpe = Embed(cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"), name="wpe", **kw)
        hidden = dropout(cfg, wte(input_ids) + wpe(position_ids), deterministic)
        hidden = BlockStack(cfg, GPT2Block, deterministic, decode, name="h")(
            hidden, attention_mask, position_ids
        )
        hidden = LayerNorm(cfg.layer_norm_eps, name="ln_f", **kw)(hidden)
        if return_hidden:
            return hidden
        return wte.attend(hidden)

    def output_embedding(self, params) -> jax.Array:
        """The [D, V] matrix that maps final hidden states to logits."""
        return params["wte"]["embedding"].T
