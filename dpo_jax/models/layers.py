"""Building blocks shared by our GPT-2, GPT-NeoX and GPT-J modules.

Owns: logically-partitioned parameters, projections, fp32 layer norm, causal self-attention with
padding masks and a key/value cache, the layer stack (python loop or `nn.scan`, optional remat), and
`CausalLM`, the embed -> blocks -> final norm -> head skeleton both language models share.
Every parameter carries logical axis names ("vocab", "embed", "heads", "kv", "mlp", "qkv", "norm",
and "layers" when scanned); `dpo_jax.sharding` maps them onto the mesh.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from dpo_jax.models.attention import ATTENTION_CHECKPOINT_NAME, RightPadded, causal_attention
from dpo_jax.models.config import ModelConfig

INIT_STD = 0.02


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "relu":
        return jax.nn.relu
    if name == "silu":
        return jax.nn.silu
    raise ValueError(f"unknown activation {name!r}")


# The name under which every projection's output is saved by the "save_matmuls_attention" policy.
LINEAR_CHECKPOINT_NAME = "linear_out"


def remat_policy(name: str):
    """What a rematerialised block keeps for its backward pass; the rest is recomputed.

    "save_matmuls_attention" keeps the projections' and the attention kernels' outputs by name
    (`checkpoint_name`), so the backward recomputes only cheap elementwise work (norms, activations,
    rotary) and never the attention. "dots" keeps XLA dot outputs only: a cuDNN or Pallas attention
    kernel is no dot, so it would run again.
    """
    return {
        "full": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.checkpoint_dots,
        "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        "save_matmuls_attention": jax.checkpoint_policies.save_only_these_names(
            LINEAR_CHECKPOINT_NAME, ATTENTION_CHECKPOINT_NAME
        ),
    }[name]


def _contract(x: jax.Array, kernel: jax.Array, num_contract: int) -> jax.Array:
    """x's last `num_contract` dims against the kernel's first ones."""
    contract_x = tuple(range(x.ndim - num_contract, x.ndim))
    return jax.lax.dot_general(x, kernel, ((contract_x, tuple(range(num_contract))), ((), ())))


def project(
    x: jax.Array, kernel: jax.Array, num_contract: int = 1, input_activation: str | None = None
) -> jax.Array:
    """`_contract(act(x), kernel.astype(x.dtype))`: its values and gradients, bitwise, with less kept
    from the forward to the backward pass than plain autodiff keeps.

    Plain autodiff saves the kernel's low-precision cast (a second, half-size copy of the model) and,
    with an activation in front (the MLP's down projection), both its input and its output. Here the
    backward pass keeps only `x` and the fp32 kernel, which stays alive anyway as a parameter, and
    recomputes the cast and the activation: elementwise work XLA fuses into the backward matmuls, the
    way fused bias-GeLU kernels do. Nothing else is recomputed (no matmul, no attention): at
    Pythia-2.8B, micro-batch 8, this drops the [tokens, 4 x hidden] activation output of every layer
    (5 GiB) from what the step holds.
    """
    return _projection(num_contract, input_activation)(x, kernel)


@functools.cache
def _projection(num_contract: int, input_activation: str | None) -> Callable[[jax.Array, jax.Array], jax.Array]:
    activate = activation_fn(input_activation) if input_activation else (lambda x: x)

    def contract(x, kernel):
        return _contract(activate(x), kernel.astype(x.dtype), num_contract)

    def forward(x, kernel):
        return contract(x, kernel), (x, kernel)

    def backward(residuals, g):
        # The barrier keeps XLA from merging this recomputation with the forward pass's identical
        # one (common-subexpression elimination would turn it back into saved activations), as
        # jax.checkpoint's prevent_cse does.
        x, kernel = jax.lax.optimization_barrier(residuals)
        activated, activation_vjp = jax.vjp(activate, x)
        _, contract_vjp = jax.vjp(
            lambda a, b: _contract(a, b, num_contract), activated, kernel.astype(x.dtype)
        )
        d_activated, d_kernel = contract_vjp(g)
        (dx,) = activation_vjp(d_activated)
        return dx, d_kernel.astype(kernel.dtype)

    contract = jax.custom_vjp(contract)
    contract.defvjp(forward, backward)
    return contract


class Linear(nn.Module):
    """y = x . kernel (+ bias), contracting the last `num_contract` dims of x with the kernel's first.

    Multi-dimensional kernels ([embed, 3, heads, kv] ...) keep the head structure visible to the
    sharding rules instead of hiding it in a flat matrix.
    """

    kernel_shape: Sequence[int]
    kernel_axes: Sequence[str | None]
    num_contract: int = 1
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    input_activation: str | None = None  # applied to x first (see `project`)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), tuple(self.kernel_axes)),
            tuple(self.kernel_shape),
            self.param_dtype,
        )
        n = self.num_contract
        y = project(x.astype(self.dtype), kernel, n, self.input_activation)
        if self.use_bias:
            out_shape = tuple(self.kernel_shape[n:])
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, tuple(self.kernel_axes[n:])),
                out_shape,
                self.param_dtype,
            )
            y = y + bias.astype(self.dtype)
        return checkpoint_name(y, LINEAR_CHECKPOINT_NAME)


class LayerNorm(nn.Module):
    """LayerNorm computed in fp32 (as torch autocast does), returned in the compute dtype."""

    eps: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (d,), self.param_dtype
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), (d,), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


class Embed(nn.Module):
    num_embeddings: int
    features: int
    axes: tuple[str | None, str | None]
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), self.axes),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        # Gather the table's feature axis first (as FSDP does for every weight), so the lookup runs
        # on each device's own rows of the batch. Left to itself, XLA keeps the features sharded and
        # instead all-gathers the whole batch's token ids, then reshards the result all-to-all.
        table = nn.with_logical_constraint(self.embedding, (self.axes[0], None))
        return jnp.take(table, ids, axis=0).astype(self.dtype)

    def attend(self, hidden: jax.Array) -> jax.Array:
        """Tied output head: hidden [..., D] -> logits [..., V]."""
        return jnp.einsum("...d,vd->...v", hidden, self.embedding.astype(self.dtype))


def resolve_position_ids(input_ids, attention_mask, position_ids, *, decode: bool) -> jax.Array:
    """The given positions, else ones that skip left padding (padded and unpadded batches then give
    the same logits). Decoding needs them explicitly: only the sampler knows how far each row is."""
    if position_ids is not None:
        return position_ids
    if decode:
        raise ValueError("decode=True needs explicit position_ids (the sampler tracks them)")
    if attention_mask is None:
        return jnp.broadcast_to(jnp.arange(input_ids.shape[-1], dtype=jnp.int32), input_ids.shape)
    if isinstance(attention_mask, RightPadded):
        attention_mask = attention_mask.mask
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def constrain_hidden(hidden: jax.Array) -> jax.Array:
    """Residual-stream activations: batch over the data axes, the rest as the rules say."""
    return nn.with_logical_constraint(hidden, ("activation_batch", "activation_length", "activation_embed"))


class CausalAttentionCore(nn.Module):
    """Masked causal attention over q, k, v [batch, length, heads, head_dim], with a KV cache.

    `attention_mask` [batch, key_slots] marks real tokens: the input length in a full forward,
    the cache length when decoding; a full forward also takes a pairwise [batch, length, length]
    mask, a `RowMask` or a `RightPadded` [batch, length] mask (see `dpo_jax.models.attention`). Decoding writes k/v at the cache index and advances it,
    so a prompt can be prefilled in one call and continued one token at a time. The kernel is
    `config.attention`'s (`dpo_jax.models.attention`); decoding runs `cached_attention`.
    """

    scale: float
    decode: bool = False
    implementation: str = "auto"

    @nn.compact
    def __call__(self, q, k, v, attention_mask):
        if self.decode:
            initialized = self.has_variable("cache", "cached_key")
            # Heads before positions ([B, H, L, D]): each decoding step contracts the whole cache
            # with batch dims (B, H) leading, so XLA reads it as it lies instead of transposing
            # every layer's cache at every token.
            cache_shape = (k.shape[0], k.shape[2], k.shape[1], k.shape[3])
            cached_key = self.variable("cache", "cached_key", jnp.zeros, cache_shape, k.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, cache_shape, v.dtype)
            cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            if initialized:
                index = cache_index.value

                def write(cache, new):
                    new = jnp.swapaxes(new, 1, 2).astype(cache.dtype)
                    return jax.lax.dynamic_update_slice(cache, new, (0, 0, index, 0))

                cached_key.value = write(cached_key.value, k)
                cached_value.value = write(cached_value.value, v)
                cache_index.value = index + q.shape[1]
                keys, values = cached_key.value, cached_value.value
                return cached_attention(q, keys, values, attention_mask, scale=self.scale, query_offset=index)
        return causal_attention(
            q, k, v, attention_mask, scale=self.scale, implementation=self.implementation, decode=self.decode
        )


def cached_attention(q, k_cache, v_cache, attention_mask, *, scale, query_offset):
    """Queries [B, Lq, H, D] at cache slots query_offset.. against a [B, H, Lk, D] cache: XLA's dense
    masked softmax (`jax.nn.dot_product_attention`'s, fp32 logits and softmax), the mask [B, Lk] plus
    causality, each query seeing at least itself."""
    q_len, k_len = q.shape[1], k_cache.shape[2]
    k_cache, v_cache = k_cache.astype(q.dtype), v_cache.astype(q.dtype)
    logits = jnp.einsum("bqhd,bhkd->bhqk", q, k_cache, preferred_element_type=jnp.float32) * scale
    query_slots = jnp.arange(q_len, dtype=jnp.int32) + query_offset
    key_slots = jnp.arange(k_len, dtype=jnp.int32)
    visible = key_slots[None, :] <= query_slots[:, None]
    if attention_mask is not None:
        if attention_mask.shape != (q.shape[0], k_len):
            raise ValueError(
                f"attention_mask has shape {attention_mask.shape}; expected {(q.shape[0], k_len)} when "
                "decoding (the cache length)"
            )
        visible = visible[None] & attention_mask.astype(bool)[:, None, :]
    visible = visible | (key_slots[None, :] == query_slots[:, None])
    visible = jnp.broadcast_to(visible, (q.shape[0], q_len, k_len))[:, None]
    logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bhkd->bqhd", probs, v_cache)


class MLP(nn.Module):
    """embed -> mlp -> activation -> embed, its two projections named as the checkpoint names them."""

    config: ModelConfig
    up_name: str
    down_name: str

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        d, f = cfg.hidden_size, cfg.intermediate_size
        x = Linear((d, f), ("embed", "mlp"), name=self.up_name, **kw)(hidden)
        return Linear((f, d), ("mlp", "embed"), name=self.down_name, input_activation=cfg.activation, **kw)(x)


class Block(nn.Module):
    """One transformer layer, `(hidden, attention_mask, position_ids) -> (hidden, None)`; the fields
    are what `BlockStack` passes to every layer."""

    config: ModelConfig
    layer_idx: int = 0
    deterministic: bool = True
    decode: bool = False


class BlockStack(nn.Module):
    """Applies `config.num_layers` blocks: a python loop (layers_0 ...) or one `nn.scan` ("layers").

    `block_cls(config, layer_idx=..., deterministic=..., decode=...)` must map
    (hidden, attention_mask, position_ids) -> (hidden, None).
    """

    config: ModelConfig
    block_cls: type[nn.Module]
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, hidden, attention_mask, position_ids):
        cfg = self.config
        block = self.block_cls
        if cfg.remat_policy != "none":
            block = nn.remat(block, policy=remat_policy(cfg.remat_policy), prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            stack = nn.scan(
                block,
                variable_axes={"params": 0, "cache": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            hidden, _ = stack(
                cfg, layer_idx=0, deterministic=self.deterministic, decode=self.decode, name="layers"
            )(hidden, attention_mask, position_ids)
            return hidden
        for i in range(cfg.num_layers):
            hidden, _ = block(
                cfg, layer_idx=i, deterministic=self.deterministic, decode=self.decode, name=f"layers_{i}"
            )(hidden, attention_mask, position_ids)
        return hidden


def dropout(config: ModelConfig, x: jax.Array, deterministic: bool) -> jax.Array:
    if config.dropout_rate == 0.0 or deterministic:
        return x
    return nn.Dropout(config.dropout_rate)(x, deterministic=False)


class CausalLM(nn.Module):
    """A decoder-only language model: token embedding -> block stack -> final norm -> vocabulary head.

    `apply({"params": p}, input_ids, attention_mask=..., position_ids=...) -> logits [B, L, V]`;
    the embedding and head hold `config.padded_vocab_size` entries (a multiple of 128, so the
    vocabulary shards evenly), and the logits are cut back to the real V before anyone sees them;
    `return_hidden=True` returns the final hidden states [B, L, D] instead, for losses that project
    onto the vocabulary in chunks (see `output_embedding`). Subclasses give their parts the names of
    their Hugging Face checkpoints (so the converter is a reshape per tensor) and add what differs:
    GPT-2 overrides `embed_positions` with its learned position table; rotary models rotate inside
    attention. The head is the token embedding (tied) or a separate `embed_out` matrix, with a bias
    where `head_bias` (GPT-J).
    """

    config: ModelConfig
    block_cls: ClassVar[type[nn.Module]]
    embed_name: ClassVar[str]
    stack_name: ClassVar[str]
    final_norm_name: ClassVar[str]
    head_bias: ClassVar[bool] = False

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
        token_embed = Embed(
            cfg.padded_vocab_size, cfg.hidden_size, ("vocab", "embed"), name=self.embed_name, **kw
        )
        hidden = dropout(cfg, self.embed_positions(token_embed(input_ids), position_ids), deterministic)
        hidden = BlockStack(cfg, self.block_cls, deterministic, decode, name=self.stack_name)(
            hidden, attention_mask, position_ids
        )
        hidden = LayerNorm(cfg.layer_norm_eps, name=self.final_norm_name, **kw)(hidden)
        if return_hidden:
            return hidden
        if cfg.tie_word_embeddings:
            logits = token_embed.attend(hidden)
        else:
            logits = Linear(
                (cfg.hidden_size, cfg.padded_vocab_size),
                ("embed", "vocab"),
                use_bias=self.head_bias,
                name="embed_out",
                **kw,
            )(hidden)
        logits = nn.with_logical_constraint(
            logits, ("activation_batch", "activation_length", "activation_vocab")
        )
        # The padded entries leave no trace: log-probs, sampling and exports see V columns.
        return logits[..., : cfg.vocab_size] if cfg.padded_vocab_size != cfg.vocab_size else logits

    def embed_positions(self, token_embeddings: jax.Array, position_ids: jax.Array) -> jax.Array:
        """Position information added at the input (none here: rotary models add it in attention)."""
        del position_ids
        return token_embeddings

    def output_embedding(self, params) -> jax.Array:
        """The [D, V] matrix that maps final hidden states to logits (the real vocabulary only)."""
        vocab = self.config.vocab_size
        if self.config.tie_word_embeddings:
            return params[self.embed_name]["embedding"][:vocab].T
        return params["embed_out"]["kernel"][:, :vocab]

    def output_bias(self, params) -> jax.Array | None:
        """The head's [V] bias added to the logits (the real vocabulary only), or None (no bias)."""
        if not self.head_bias:
            return None
        return params["embed_out"]["bias"][: self.config.vocab_size]
