"""Causal attention by backend: one function, several kernels, the same numbers.

`causal_attention(q, k, v, attention_mask, scale=..., implementation=..., decode=...)` over
q [B, Lq, H, D] and k, v [B, Lk, H, D] (Lq == Lk except when decoding against a cache):
  xla     a dense masked softmax (`jax.nn.dot_product_attention`, implementation="xla"): any mask,
          any device; the path for decoding with a KV cache;
  cudnn   cuDNN flash attention (NVIDIA GPUs, bf16/fp16, head_dim a multiple of 8 up to 128, or up
          to 256 on Hopper and later, as `cudnn_max_head_dim()` says):
          causal, with padding given as sequence lengths, which cuDNN reads as right padding (each
          row's real tokens first); any other [B, L] mask goes through a view of the row with its
          real tokens moved to the front (below); a pairwise mask (rows) goes in as a [B, 1, L, L]
          mask broadcast over heads, which cuDNN adds to the scores as a bias;
  splash  the Pallas splash-attention kernel (TPUs; interpret mode elsewhere, for tests): causal,
          with padding as segment ids (real tokens 1, padding 0), which serves padding anywhere; rows
          (`RowMask`) as segment ids too, shared prompts through one view per response (below);
  auto    cudnn on NVIDIA GPUs and splash on TPUs where the shapes allow it, xla otherwise and
          always for decoding (and for a dense pairwise mask on TPUs: splash needs `RowMask`). The
          platform is the one the program is traced for: the mesh in context (ahead-of-time
          compilation traces for a TPU or GPU mesh on a CPU host), else the default backend.

`attention_mask` is None (every token real), [B, Lk] (which tokens are real: the input length in a
full forward, the cache length when decoding), [B, Lq, Lk] (a pairwise mask: which keys each query
may see, causality still applied on top) or a `RowMask` (shared-prompt and packed rows,
`dpo_jax.data.packing`: the pairwise mask given by its segment and branch ids). Padding queries are
never read by the losses; every backend keeps them finite (XLA and cuDNN let a query with no visible
key see itself, splash lets padding see padding).

The padding contract. Every backend gives the same outputs at the real positions for any [B, L] mask:
right padding (the loader's batches), left padding (PPO's and teacher forcing's [prompt | response],
the sampler's prompts), both, or holes. Only cuDNN cares where the padding is: its sequence lengths
mean "the first n tokens are real". A mask whose type says so, `RightPadded(mask)`, goes to cuDNN as
lengths directly; a plain array may be padded anywhere, so cuDNN attends over a view of each row with
its real tokens first, in row order, and the padding behind them (a stable partition; q and k already
carry their positions, so causal attention over the view is causal attention over the row's real
tokens), and the outputs go back to their row positions. The same view serves splash's shared prompts.

Splash on rows. Without a shared prompt every response is its own causal sequence, so the ids
(example, branch) are exactly splash's segment ids: one pass. A shared prompt is seen by K branches
that must not see each other, which segment-id equality cannot say; so response k gets a view of the
row: every example's prompt and branch k, in row order, the other branches moved behind the real
tokens as padding. Causal splash with per-example segment ids on the view is exactly what prompt and
branch k see in the row (q, k, v already carry their positions), so branch k's outputs come from view
k and the prompt's from view 1. Prompt queries are attended K times (the projections and MLPs, the
bulk of a step, still run once); which of the two paths runs is decided per device shard by whether
its rows hold any shared-prompt token.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from dpo_jax.models.config import ATTENTION_IMPLEMENTATIONS

# The name under which the attention output is saved by the "save_matmuls_attention" remat policy.
ATTENTION_CHECKPOINT_NAME = "attention_out"

# cuDNN's fused attention handles these head sizes and dtypes: JAX's own trace-time check
# (jax._src.cudnn.fused_attention_stablehlo.check_is_flash_attention) takes bf16/fp16 heads that are a
# multiple of 8 and at most 256 wide on compute capability 9.0 and later (Hopper on), at most 128
# before; the same bound whether the call is differentiated (a training step) or not.
CUDNN_MAX_HEAD_DIM = 128
CUDNN_MAX_HEAD_DIM_HOPPER = 256
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


def cudnn_max_head_dim() -> int:
    """The widest head cuDNN takes where the program runs: 256 on Hopper and later, else 128.

    Asked of JAX's own check, so that the dispatcher never hands cuDNN a head JAX would refuse. It reads
    the local GPU's compute capability; a deviceless compile answers it from its target instead
    (`dpo_jax.perf.targets.cudnn_checks_from_target`: an H100 is 9.0), and a host without a GPU is 128.
    """
    from jax._src.cudnn import fused_attention_stablehlo

    hopper = fused_attention_stablehlo.check_compute_capability("9.0")
    return CUDNN_MAX_HEAD_DIM_HOPPER if hopper else CUDNN_MAX_HEAD_DIM


def cudnn_supports(q: jax.Array) -> bool:
    head_dim = q.shape[-1]
    return q.dtype in CUDNN_DTYPES and head_dim % 8 == 0 and head_dim <= cudnn_max_head_dim()


@flax.struct.dataclass
class RowMask:
    """The attention of shared-prompt / packed rows, as ids rather than an [B, L, L] array.

    A query sees a key of its own example (`segment_ids`, 0 on padding) when the key is on the
    example's shared prompt (`branch_ids` 0) or on the query's own branch (response k: k); causality
    comes on top. `num_branches` is K, the responses per example (static: splash makes K views).
    """

    segment_ids: jax.Array  # int [B, L]
    branch_ids: jax.Array  # int [B, L]
    num_branches: int = flax.struct.field(pytree_node=False, default=1)

    def pairwise(self) -> jax.Array:
        """`[B, L, L]` bool: which keys each query may see (before causality)."""
        segments, branches = self.segment_ids, self.branch_ids
        same_example = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] > 0)
        visible = (branches[:, None, :] == 0) | (branches[:, :, None] == branches[:, None, :])
        return same_example & visible


@flax.struct.dataclass
class RightPadded:
    """A [B, L] padding mask (1 on real tokens) whose rows all hold their real tokens first, as the
    loader's batches do: cuDNN takes it as sequence lengths with no view (see the module docstring).
    Only a caller that builds the padding itself can say so; a plain array may be padded anywhere."""

    mask: jax.Array


def real_tokens_first(keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each row's stable partition, real (`keep`) positions first in row order, the rest behind them:
    `(from_view, to_view)` [B, L] int32, `from_view[b, j]` the row position view slot j holds and
    `to_view[b, i]` the slot row position i lands in (inverse permutations of each other)."""
    keep = keep.astype(bool)
    kept = jnp.cumsum(keep, axis=1) - 1
    dropped = jnp.sum(keep, axis=1, keepdims=True) + jnp.cumsum(~keep, axis=1) - 1
    to_view = jnp.where(keep, kept, dropped).astype(jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(keep.shape[1], dtype=jnp.int32), keep.shape)
    from_view = jnp.zeros_like(to_view).at[jnp.arange(keep.shape[0])[:, None], to_view].set(positions)
    return from_view, to_view


def gather_positions(x: jax.Array, index: jax.Array) -> jax.Array:
    """`x[b, index[b, j], ...]`: x [B, L, ...] reordered along its positions."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


@jax.custom_vjp
def _permute_positions(x, index, inverse):
    """`gather_positions(x, index)` for a permutation whose inverse is `inverse`; its gradient is the
    inverse gather, where a gather's own transpose would be a scatter-add."""
    return gather_positions(x, index)


def _permute_positions_fwd(x, index, inverse):
    return gather_positions(x, index), inverse


def _permute_positions_bwd(inverse, grad):
    return gather_positions(grad, inverse), None, None


_permute_positions.defvjp(_permute_positions_fwd, _permute_positions_bwd)


def resolve_implementation(
    name: str, q: jax.Array, *, decode: bool, pairwise: bool, rows: bool = False
) -> str:
    """The backend that runs: `name`, or for "auto" the platform's kernel where it applies.

    `pairwise`: the mask is a dense [B, L, L] array (cuDNN takes it, splash cannot: XLA serves it);
    `rows`: the mask is a `RowMask` (both kernels take it).
    """
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention {name!r}; expected one of {ATTENTION_IMPLEMENTATIONS}")
    if decode:
        # The kernels take no cache index: XLA serves decoding, whatever was asked.
        return "xla"
    if pairwise and not rows and name == "splash":
        return "xla"
    if name != "auto":
        return name
    platform = target_platform()
    if platform in ("gpu", "cuda") and cudnn_supports(q):
        return "cudnn"
    if platform == "tpu" and not (pairwise and not rows):
        return "splash"
    return "xla"


def causal_attention(q, k, v, attention_mask, *, scale, implementation="xla", decode=False, query_offset=0):
    """softmax(scale q k^T + causal & padding mask) v -> [B, Lq, H, D], in q's dtype.

    `query_offset` is the cache position of the first query when decoding (the key slots then
    run over the whole cache).
    """
    right_padded = isinstance(attention_mask, RightPadded)
    if right_padded:
        attention_mask = attention_mask.mask
    rows = isinstance(attention_mask, RowMask)
    pairwise = rows or (attention_mask is not None and attention_mask.ndim == 3)
    backend = resolve_implementation(implementation, q, decode=decode, pairwise=pairwise, rows=rows)
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    if rows and backend != "splash":
        attention_mask = attention_mask.pairwise()
    if backend == "xla":
        out = _xla_attention(q, k, v, attention_mask, scale=scale, query_offset=query_offset)
    elif backend == "cudnn":
        out = _cudnn_attention(q, k, v, attention_mask, scale=scale, right_padded=right_padded)
    else:
        out = _splash_attention(q, k, v, attention_mask, scale=scale)
    return checkpoint_name(out, ATTENTION_CHECKPOINT_NAME)


def _check_pairwise(attention_mask, batch: int, q_len: int, k_len: int) -> None:
    if attention_mask.shape != (batch, q_len, k_len):
        raise ValueError(
            f"a pairwise attention_mask has shape {attention_mask.shape}; expected "
            f"{(batch, q_len, k_len)} (batch, query, key)"
        )


def _xla_attention(q, k, v, attention_mask, *, scale, query_offset):
    batch, q_len, k_len = q.shape[0], q.shape[1], k.shape[1]
    query_slots = jnp.arange(q_len, dtype=jnp.int32) + query_offset
    key_slots = jnp.arange(k_len, dtype=jnp.int32)
    mask = key_slots[None, :] <= query_slots[:, None]  # [q, k] causal
    if attention_mask is not None:
        if attention_mask.ndim == 3:
            _check_pairwise(attention_mask, batch, q_len, k_len)
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


def _cudnn_attention(q, k, v, attention_mask, *, scale, right_padded=False, implementation="cudnn"):
    """`implementation="xla"` runs the very call on XLA's reference path (tests on CPU).
    `right_padded`: a [B, L] mask is known to be right padded (`RightPadded`); else it may be padded
    anywhere and cuDNN runs on the real-tokens-first view of each row."""
    if implementation == "cudnn" and not cudnn_supports(q):
        raise ValueError(
            f"attention='cudnn' needs bf16/fp16 compute and head_dim <= {cudnn_max_head_dim()}, a multiple "
            f"of 8; got {q.dtype} and head_dim {q.shape[-1]} (use attention='auto' or 'xla')"
        )
    batch, length = q.shape[0], q.shape[1]
    if attention_mask is not None and attention_mask.ndim == 3:
        return _cudnn_pairwise(q, k, v, attention_mask, scale=scale, implementation=implementation)
    if attention_mask is None:
        lengths = jnp.full((batch,), length, jnp.int32)
    else:
        if attention_mask.shape != (batch, length):
            raise ValueError(f"attention_mask has shape {attention_mask.shape}; expected {(batch, length)}")
        lengths = jnp.sum(attention_mask.astype(jnp.int32), axis=-1)
    # Every row must keep one key: a zero length is an all-padding row, whose output is never read.
    lengths = jnp.maximum(lengths, 1)
    call = functools.partial(
        jax.nn.dot_product_attention,
        scale=scale,
        is_causal=True,
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation=implementation,
    )
    if attention_mask is None or right_padded:
        return call(q, k, v)
    from_view, to_view = real_tokens_first(attention_mask)
    q, k, v = (_permute_positions(x, from_view, to_view) for x in (q, k, v))
    return _permute_positions(call(q, k, v), to_view, from_view)


def _cudnn_pairwise(q, k, v, attention_mask, *, scale, implementation):
    """A pairwise mask as cuDNN's [B, 1, L, L] mask (one for all heads; cuDNN turns it into an additive
    bias), causality as cuDNN's own causal mask."""
    batch, length = q.shape[0], q.shape[1]
    _check_pairwise(attention_mask, batch, length, length)
    # Each query sees itself, as on the XLA path: padding rows stay finite.
    mask = attention_mask.astype(bool) | jnp.eye(length, dtype=bool)[None]
    # cuDNN's backward with a bias needs even sequence lengths: an odd row gets one padding position,
    # which no real query sees (causality) and whose output is cut off.
    padded = length + length % 2
    if padded != length:
        q, k, v = (jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0))) for x in (q, k, v))
        mask = jnp.pad(mask, ((0, 0), (0, 1), (0, 1)), constant_values=True)
    out = jax.nn.dot_product_attention(
        q, k, v, mask=mask[:, None], scale=scale, is_causal=True, implementation=implementation
    )
    return out[:, :length]


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


def _splash_rows_local(q, k, v, segment_ids, branch_ids, *, num_branches, splash):
    """Rows on one device's shard (see the module docstring): one pass, or one view per response."""
    real = segment_ids > 0
    if num_branches == 1:
        # Prompt and its one response make up the whole example: per-example ids are the mask.
        return splash(q, k, v, segment_ids)

    def one_pass(q, k, v):
        ids = jnp.where(real, segment_ids * (num_branches + 1) + branch_ids, 0)
        return splash(q, k, v, ids)

    def per_response_views(q, k, v):
        out = jnp.zeros_like(q)
        gather = gather_positions
        for branch in range(1, num_branches + 1):
            keep = real & ((branch_ids == 0) | (branch_ids == branch))
            from_view, to_view = real_tokens_first(keep)
            view_ids = jnp.where(gather(keep, from_view), gather(segment_ids, from_view), 0)
            view_out = splash(gather(q, from_view), gather(k, from_view), gather(v, from_view), view_ids)
            # The prompt's outputs (and padding's, never read) from the first view, branch k's from view k.
            mine = branch_ids == branch if branch > 1 else branch_ids <= 1
            out = jnp.where(mine[:, :, None, None], gather(view_out, to_view), out)
        return out

    shared = jnp.any(real & (branch_ids == 0))
    return jax.lax.cond(shared, per_response_views, one_pass, q, k, v)


def _splash_attention(q, k, v, attention_mask, *, scale):
    batch, length = q.shape[0], q.shape[1]
    branch_ids, num_branches = None, 1
    if attention_mask is None:
        segment_ids = jnp.ones((batch, length), jnp.int32)
    elif isinstance(attention_mask, RowMask):
        segment_ids = attention_mask.segment_ids.astype(jnp.int32)
        branch_ids = attention_mask.branch_ids.astype(jnp.int32)
        num_branches = attention_mask.num_branches
    else:
        segment_ids = attention_mask.astype(jnp.int32)
    block = _splash_block(length)
    padded = -(-length // block) * block
    ids = [segment_ids] if branch_ids is None else [segment_ids, branch_ids]
    if padded != length:
        # Tail positions join the padding segment: with causality no real query reaches them.
        pad = ((0, 0), (0, padded - length), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
        ids = [jnp.pad(x, ((0, 0), (0, padded - length))) for x in ids]
    local = functools.partial(_splash_local, scale=scale, interpret=target_platform() != "tpu")
    if branch_ids is not None:
        local = functools.partial(_splash_rows_local, num_branches=num_branches, splash=local)
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        # A Pallas call is opaque to the SPMD partitioner: run it per shard (batch over the data axes,
        # heads over the tensor axis, as the logical-axis rules in context place the activations).
        batch_axes, heads_axes = nn.logical_to_mesh_axes(("activation_batch", "activation_heads"))
        spec = jax.sharding.PartitionSpec(batch_axes, None, heads_axes, None)
        ids_spec = jax.sharding.PartitionSpec(batch_axes, None)
        local = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(spec, spec, spec) + (ids_spec,) * len(ids),
            out_specs=spec,
            check_vma=False,
        )
    return local(q, k, v, *ids)[:, :length]


def encoder_attention(q, k, v, attention_mask, *, scale, implementation="auto"):
    """Bidirectional attention over the keys `attention_mask` [B, L] marks (an encoder's, RoBERTa's):
    softmax(scale q k^T) v -> [B, L, H, D] in q's dtype, logits and softmax in fp32.

    "auto" is cuDNN's fused kernel where a program is traced for a GPU and the compute dtype is one
    it takes (bf16 / fp16), XLA's dense softmax otherwise. cuDNN takes the padding as key lengths, so
    each row's keys are read in their real-tokens-first view (`real_tokens_first`): with no causal
    mask the order of the keys does not matter, and the queries stay where they are, so a mask padded
    anywhere gives the same outputs as on XLA. `implementation="cudnn_on_xla"` runs that very call on
    XLA's reference path (tests on CPU)."""
    mask = jnp.ones(q.shape[:2], bool) if attention_mask is None else attention_mask.astype(bool)
    backend = implementation
    if implementation == "auto":
        backend = "cudnn" if target_platform() in ("gpu", "cuda") and cudnn_supports(q) else "xla"
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    if backend == "xla":
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], scale=scale, implementation="xla")
    from_view, _ = real_tokens_first(mask)
    k, v = gather_positions(k, from_view), gather_positions(v, from_view)
    # An all-padding row keeps one key: its outputs are padding, never read.
    lengths = jnp.maximum(jnp.sum(mask.astype(jnp.int32), axis=-1), 1)
    return jax.nn.dot_product_attention(
        q, k, v, scale=scale, key_value_seq_lengths=lengths,
        implementation="xla" if backend == "cudnn_on_xla" else "cudnn",
    )  # fmt: skip
