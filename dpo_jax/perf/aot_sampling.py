"""The evaluations' programs with abstract arguments, for `perf.aot` to compile for a target:
`--program=sample` (the mesh sampler's decode program) and `--program=score` (the scorer's pass).

The shapes are those of the evaluation's calls, from the config's `sampling` fields (the values the
paper-scale recipes pass to winrate, make_pairs, frontier and Best-of-N): `sampling.batch_size` rows
(prompts x samples) per decode call, `sampling.num_samples` completions per prompt drawn in one call,
prompts of `data.max_prompt_length` tokens (the longest the batch can be), `sampling.max_new_tokens`
new tokens; the scorer gets `sampling.batch_size` sequences of prompt + completion per call.

Everything is decided by the code that runs, not re-derived here: the decode program and where its
params sit are `sampling.sharded`'s (`decode_placement` on the run's mesh over the target's devices,
with the target's HBM as the device size, so a model that does not fit replicated is split over a
larger tensor axis exactly as on the slice), the prompts per call are `sampling.sharded.prompts_per_call`,
and the scoring program, its mesh (every device on the data axis) and its padded rows and length
are `judges.scoring`'s. Params are loaded as the evaluation commands load them: the sampled policy in
the run's `model.param_dtype` with `model.dtype` compute, the scorer in fp32 params with the target's
compute dtype (`judges.scoring.scorer_dtype`: bf16 on GPUs and TPUs, so cuDNN's attention serves it).

Per program the report adds what a decode is bound by: the params and the KV cache per device, the
collectives one generated token runs (`perf.hlo.decode_loop_collectives`), and the bytes a device
reads per generated token (its weights and its whole cache buffer) over the chip's HBM bandwidth: a
lower bound on the time per token, labelled an estimate, beside the compiler's own cost-model time
where the TPU compiler gives one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from dpo_jax.judges.scoring import bucket_length, jit_score_program, scorer_dtype, scoring_rows
from dpo_jax.models import abstract_params, build_model, init_cache
from dpo_jax.models.config import from_hf_config, hf_config_dict
from dpo_jax.models.loading import describe_model, describe_scorer
from dpo_jax.models.reward import ScalarHeadModel
from dpo_jax.perf.hlo import decode_loop_collectives
from dpo_jax.perf.targets import GIB, Target
from dpo_jax.sampling.sharded import decode_placement, decode_program, prompts_per_call
from dpo_jax.sharding import BATCH_MESH_AXES, data_parallel_size, make_mesh

EVALUATION_PROGRAMS = ("sample", "score")


def _gib(value: float) -> float:
    return round(value / GIB, 3)


def _sampled_model(config):
    return build_model(describe_model(config.model, param_dtype=config.model.param_dtype))


def _shapes(config) -> tuple[int, int, int, int]:
    s = config.sampling
    values = (
        int(s.batch_size),
        int(s.num_samples),
        int(s.max_new_tokens),
        int(config.data.max_prompt_length),
    )
    if min(values) < 1:
        raise ValueError(
            "sampling.batch_size, sampling.num_samples, sampling.max_new_tokens and data.max_prompt_length "
            f"must be >= 1, got {values}"
        )
    return values


def sample_program(config, mesh, rules, target: Target, program_type):
    """-> (Program, the sampled model's config) for the decode program at the evaluation's shapes."""
    batch_size, num_samples, new_tokens, prompt_length = _shapes(config)
    model = _sampled_model(config)
    limit = model.config.max_position_embeddings
    if prompt_length + new_tokens > limit:
        raise ValueError(
            f"data.max_prompt_length={prompt_length} + sampling.max_new_tokens={new_tokens} exceeds the "
            f"model's {limit} positions"
        )
    placement = decode_placement(model, mesh, rules, device_bytes=target.hbm_bytes)
    decode_mesh = placement.mesh
    prompts = prompts_per_call(batch_size, num_samples, decode_mesh)
    rows = prompts * num_samples
    program = decode_program(
        model,
        (decode_mesh, placement.rules),
        max_new_tokens=new_tokens,
        num_samples=num_samples,
        filter_tokens=False,
        eos_id=0,
        pad_id=0,
    )  # fmt: skip  (temperature sampling as the paper's evaluations; top-k / top-p add one sort per token)

    def array(shape, dtype):
        spec = PartitionSpec(BATCH_MESH_AXES, *([None] * (len(shape) - 1)))
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(decode_mesh, spec))

    replicated = NamedSharding(decode_mesh, PartitionSpec())
    scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype, sharding=replicated)  # noqa: E731
    params = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract_params(model),
        placement.shardings,
    )
    args = (
        params,
        array((prompts, prompt_length), jnp.int32),
        array((prompts, prompt_length), jnp.int32),
        array((prompts,), jnp.int32),
        scalar(jnp.uint32),
        (scalar(jnp.float32), scalar(jnp.int32), scalar(jnp.float32)),
    )
    cache_length = prompt_length + new_tokens
    cache = jax.eval_shape(lambda: init_cache(model, rows, cache_length))
    # Rows over the batch axes, heads over tensor: each device holds its share of the buffer.
    buffers = [c for c in jax.tree.leaves(cache) if c.ndim == 4]  # keys and values, not the write index
    kv_per_device = sum(math.prod(c.shape) * c.dtype.itemsize for c in buffers) / (
        data_parallel_size(decode_mesh) * decode_mesh.shape["tensor"]
    )
    param_bytes = placement.param_bytes_per_device
    bandwidth_bound = (param_bytes + kv_per_device) / target.hbm_bandwidth

    def details(compiled) -> dict:
        per_token = decode_loop_collectives(compiled.as_text())
        return dict(
            decode_mesh=dict(decode_mesh.shape),
            placement=placement.layout,
            prompts_per_call=prompts,
            samples_per_prompt=num_samples,
            prompt_length=prompt_length,
            new_tokens=new_tokens,
            params_gib=_gib(param_bytes),
            kv_cache_gib=_gib(kv_per_device),
            params_bytes=int(param_bytes),
            kv_cache_bytes=int(kv_per_device),
            collectives_per_token={kind: v["count"] for kind, v in per_token.items()},
            collective_bytes_per_token=sum(v["bytes"] for v in per_token.values()),
            hbm_bandwidth_gbps=round(target.hbm_bandwidth / 1e9),
            bandwidth_bound_ms_per_token=round(1e3 * bandwidth_bound, 4),
            bandwidth_bound_new_tokens_per_second=round(rows / bandwidth_bound),
            bandwidth_note=(
                "an estimate: a device reads its weights and its whole KV-cache buffer per generated "
                "token, over the chip's datasheet HBM bandwidth (a lower bound on the time per token)"
            ),
        )

    return (
        program_type(
            "sample", program, args, resident_bytes=0,
            model_flops=2 * model.config.num_params() * rows * cache_length, rows=rows, mesh=decode_mesh,
            details=details,
        ),
        model.config,
    )  # fmt: skip


def score_model(config, platform: str = "cpu"):
    """The model that scores the evaluation's completions: `sampling.scorer` (a classifier's local
    directory or known hub name, e.g. the paper's RoBERTa-large sentiment classifier), or, when empty,
    a reward model of the policy's architecture (the recipes train theirs from the SFT model)."""
    name = str(config.sampling.scorer)
    if name:
        return describe_scorer(name, dtype=scorer_dtype(platform))
    # As the evaluation builds it (`describe_scorer`): from the config.json the reward model's export
    # writes, so a python loop over the blocks whatever the policy's `scan_layers` (a scanned scorer is
    # another program: for GPT-J-6B on a v4-8 the compiler asked 32.3 GiB of temporaries for it, the
    # loop's 0.4 GiB).
    exported = hf_config_dict(describe_model(config.model, param_dtype="float32"))
    return ScalarHeadModel(from_hf_config(exported, dtype=scorer_dtype(platform), param_dtype="float32"))


def score_program(config, target: Target, devices, program_type):
    """-> (Program, the scorer's config) for one scoring call at the evaluation's shapes, on the mesh
    the evaluation scores on (`judges.scoring.default_mesh`: every device on the data axis)."""
    batch_size, _, new_tokens, prompt_length = _shapes(config)
    model = score_model(config, target.platform)
    mesh = make_mesh((-1, 1, 1), devices=devices)
    limit = getattr(model.config, "max_sequence_length", model.config.max_position_embeddings)
    rows, length = scoring_rows(batch_size, mesh), bucket_length(prompt_length + new_tokens, limit)
    fn, args = jit_score_program(model, mesh, (rows, length))
    leaves = jax.tree.leaves(args[0])  # replicated on the scorer's mesh: a whole copy per device
    num_params = sum(math.prod(leaf.shape) for leaf in leaves)
    param_bytes = sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in leaves)

    def details(compiled) -> dict:
        return dict(
            scorer=str(config.sampling.scorer) or "reward model (the policy's architecture)",
            sequence_length=length,
            params_gib=_gib(param_bytes),
            params_bytes=int(param_bytes),
        )

    return (
        program_type(
            "score", fn, args, resident_bytes=0, model_flops=2 * num_params * rows * length, rows=rows, mesh=mesh,
            details=details,
        ),
        model.config,
    )  # fmt: skip
