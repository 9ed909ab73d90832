"""GPT-2 language model in Flax linen: learned positions, pre-LN blocks, gelu_new, tied output head.

Parameter names follow the Hugging Face checkpoint (wte, wpe, ln_1, attn.c_attn, ...) so the
converter in `hf_io` is a reshape per tensor, never a search.
"""

from __future__ import annotations

import flax.linen as nn

from dpo_jax.models.config import ModelConfig
from dpo_jax.models.layers import (
    MLP,
    Block,
    CausalAttentionCore,
    CausalLM,
    Embed,
    LayerNorm,
    Linear,
    constrain_hidden,
    dropout,
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
        out = CausalAttentionCore(scale, self.decode, cfg.attention, name="core")(q, k, v, attention_mask)
        return Linear((h, hd, d), ("heads", "kv", "embed"), num_contract=2, name="c_proj", **kw)(out)


class GPT2Block(Block):
    @nn.compact
    def __call__(self, hidden, attention_mask, position_ids):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        x = LayerNorm(cfg.layer_norm_eps, name="ln_1", **kw)(hidden)
        x = GPT2Attention(cfg, self.layer_idx, self.decode, name="attn")(x, attention_mask)
        hidden = hidden + dropout(cfg, x, self.deterministic)
        x = LayerNorm(cfg.layer_norm_eps, name="ln_2", **kw)(hidden)
        x = MLP(cfg, "c_fc", "c_proj", name="mlp")(x)
        hidden = hidden + dropout(cfg, x, self.deterministic)
        return constrain_hidden(hidden), None


class GPT2LMHeadModel(CausalLM):
    """GPT-2: learned positions added to the token embeddings, tied output head (see `CausalLM`)."""

    block_cls = GPT2Block
    embed_name = "wte"
    stack_name = "h"
    final_norm_name = "ln_f"

    def embed_positions(self, token_embeddings, position_ids):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        wpe = Embed(cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"), name="wpe", **kw)
        return token_embeddings + wpe(position_ids)
