"""Causal attention by backend: one function, several kernels, the same numbers.

`causal_attention(q, k, v, attention_mask, scale=..., implementation=..., decode=...)` over
q [B, Lq, H, D] and k, v [B, Lk, H, D] (Lq == Lk except when decoding against a cache):
  xla     a dense masked softmax (`jax.nn.dot_product_attention`, implementation="xla"): any mask,
          any device; the path for decoding with a KV cache and for pairwise [B, L, L] masks;
  cudnn   cuDNN flash attention (NVIDIA GPUs, bf16/fp16, head_dim <= 128 and a multiple of 8):
          causal, with padding given as sequence lengths, so it needs right padding (every row's
          real tokens first), as the training batches have;
  splash  the Pallas splash-attention kernel (TPUs; interpret mode elsewhere, for tests): causal,
          with padding as segment ids (real tokens 1, padding 0), right padding likewise;
  auto    cudnn on NVIDIA GPUs and splash on TPUs where the shapes allow it, xla otherwise and
          always for decoding and pairwise masks. The platform is the one the program is traced
          for: the mesh in context (ahead-of-time compilation traces for a TPU or GPU mesh on a CPU
          host), else the default backend.

`attention_mask` is None (every token real), [B, Lk] (which tokens are real: the input length in a
full forward, the cache length when decoding) or [B, Lq, Lk] (a pairwise mask: which keys each query
may see, causality still applied on top; shared-prompt and packed rows). Padding queries are never
read by the losses; every backend keeps them finite (XLA lets a query with no visible key see itself,
the kernels let padding see padding).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from dpo_jax.models.config import ATTENTION_IMPLEMENTATIONS

# The name under which the attention output is saved by the "save_matmuls_attention" remat policy.
ATTENTION_CHECKPOINT_NAME = "attention_out"

# cuDNN's fused attention handles these head sizes and dtypes (jax._src.cudnn.fused_attention_stablehlo).
CUDNN_MAX_HEAD_DIM = 128
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
# Splash tiles the sequence in blocks of at most this many positions (a multiple of the TPU lane
# width, 128); shorter or ragged sequences are padded up to a whole block and cut back.
SPLASH_MAX_BLOCK = 512
SPLASH_LANES = 128


def target_platform() -> str:
    """The platform the current trace compiles for: the context mesh's devices, else the default."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return mesh.abstract_device.platform
    return jax.default_backend()


def cudnn_supports(q: jax.Array) -> bool:
    head_dim = q.shape[-1]
    return q.dtype in CUDNN_DTYPES and head_dim <= CUDNN_MAX_HEAD_DIM and head_dim % 8 == 0


def resolve_implementation(name: str, q: jax.Array, *, decode: bool, pairwise: bool) -> str:
    """The backend that runs: `name`, or for "auto" the platform's kernel where it applies."""
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention {name!r}; expected one of {ATTENTION_IMPLEMENTATIONS}")
    if decode or pairwise:
        # The kernels take no cache index and no pairwise mask: XLA serves both, whatever was asked.
        return "xla"
    if name != "auto":
        return name
    platform = target_platform()
    if platform in ("gpu", "cuda") and cudnn_supports(q):
        return "cudnn"
    if platform == "tpu":
        return "splash"
    return "xla"


def causal_attention(q, k, v, attention_mask, *, scale, implementation="xla", decode=False, query_offset=0):
    """softmax(scale q k^T + causal & padding mask) v -> [B, Lq, H, D], in q's dtype.

    `query_offset` is the cache position of the first query when decoding (the key slots then
    run over the whole cache).
    """
    pairwise = attention_mask is not None and attention_mask.ndim == 3
    backend = resolve_implementation(implementation, q, decode=decode, pairwise=pairwise)
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    if backend == "xla":
        out = _xla_attention(q, k, v, attention_mask, scale=scale, query_offset=query_offset)
    elif backend == "cudnn":
        out = _cudnn_attention(q, k, v, attention_mask, scale=scale)
    else:
        out = _splash_attention(q, k, v, attention_mask, scale=scale)
    return checkpoint_name(out, ATTENTION_CHECKPOINT_NAME)


def _xla_attention(q, k, v, attention_mask, *, scale, query_offset):
    batch, q_len, k_len = q.shape[0], q.shape[1], k.shape[1]
    query_slots = jnp.arange(q_len, dtype=jnp.int32) + query_offset
    key_slots = jnp.arange(k_len, dtype=jnp.int32)
    mask = key_slots[None, :] <= query_slots[:, None]  # [q, k] causal
    if attention_mask is not None:
        if attention_mask.ndim == 3:
            if attention_mask.shape != (batch, q_len, k_len):
                raise ValueError(
                    f"a pairwise attention_mask has shape {attention_mask.shape}; expected "
                    f"{(batch, q_len, k_len)} (batch, query, key)"
                )
            mask = mask[None] & attention_mask.astype(bool)
        else:
            if attention_mask.shape != (batch, k_len):
                raise ValueError(
                    f"attention_mask has shape {attention_mask.shape}; expected {(batch, k_len)} "
                    "(the input length, or the cache length when decoding)"
                )
            mask = mask[None] & attention_mask.astype(bool)[:, None, :]
    # A padding query whose keys are all masked would otherwise be a fully masked softmax row;
    # letting it see itself keeps every implementation finite (its output is never used).
    mask = mask | (key_slots[None, :] == query_slots[:, None])
    mask = jnp.broadcast_to(mask, (batch, q_len, k_len))[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation="xla")


def _real_lengths(attention_mask, batch: int, length: int) -> jax.Array:
    """Real tokens per row ([B] int32); with right padding they are the first ones."""
    if attention_mask is None:
        return jnp.full((batch,), length, jnp.int32)
    return jnp.sum(attention_mask.astype(jnp.int32), axis=-1)


def _cudnn_attention(q, k, v, attention_mask, *, scale):
    if not cudnn_supports(q):
        raise ValueError(
            f"attention='cudnn' needs bf16/fp16 compute and head_dim <= {CUDNN_MAX_HEAD_DIM}, a multiple "
            f"of 8; got {q.dtype} and head_dim {q.shape[-1]} (use attention='auto' or 'xla')"
        )
    lengths = _real_lengths(attention_mask, q.shape[0], q.shape[1])
    # Every row must keep one key: a zero length is an all-padding row, whose output is never read.
    lengths = jnp.maximum(lengths, 1)
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        scale=scale,
        is_causal=True,
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation="cudnn",
    )


def _splash_block(length: int) -> int:
    return min(SPLASH_MAX_BLOCK, -(-length // SPLASH_LANES) * SPLASH_LANES)


@functools.cache
def _splash_kernel(length: int, num_heads: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    block = _splash_block(length)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    mask = masks.MultiHeadMask([masks.CausalMask((length, length))] * num_heads)
    # The kernel holds its block-sparsity tables as arrays; made concretely (not as tracers of the
    # trace that first asks for it), one kernel serves every later trace from the cache.
    with jax.ensure_compile_time_eval():
        return splash.make_splash_mha(
            mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
        )


def _splash_local(q, k, v, segment_ids, *, scale, interpret):
    """Splash on one device's shard: [b, L, h, D] in and out, L a multiple of the block."""
    from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import SegmentIds

    kernel = _splash_kernel(q.shape[1], q.shape[2], interpret)
    # The kernel takes [heads, length, head_dim] per example and applies no scale of its own.
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in ((q * scale).astype(q.dtype), k, v))
    segments = SegmentIds(q=segment_ids, kv=segment_ids)
    out = jax.vmap(kernel)(q, k, v, segment_ids=segments)
    return jnp.swapaxes(out, 1, 2)


def _splash_attention(q, k, v, attention_mask, *, scale):
    batch, length = q.shape[0], q.shape[1]
    segment_ids = (
        jnp.ones((batch, length), jnp.int32) if attention_mask is None else attention_mask.astype(jnp.int32)
    )
    block = _splash_block(length)
    padded = -(-length // block) * block
    if padded != length:
        # Tail positions join the padding segment: with causality no real query reaches them.
        pad = ((0, 0), (0, padded - length), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
        segment_ids = jnp.pad(segment_ids, ((0, 0), (0, padded - length)))
    local = functools.partial(_splash_local, scale=scale, interpret=target_platform() != "tpu")
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        # A Pallas call is opaque to the SPMD partitioner: run it per shard (batch over the data axes,
        # heads over the tensor axis, as the logical-axis rules in context place the activations).
        batch_axes, heads_axes = nn.logical_to_mesh_axes(("activation_batch", "activation_heads"))
        spec = jax.sharding.PartitionSpec(batch_axes, None, heads_axes, None)
        segment_spec = jax.sharding.PartitionSpec(batch_axes, None)
        local = jax.shard_map(
            local, mesh=mesh, in_specs=(spec, spec, spec, segment_spec), out_specs=spec, check_vma=False
        )
    return local(q, k, v, segment_ids)[:, :length]
