"""The throughput benchmark's workload and timing: the trainer's own jitted, sharded, state-donating DPO
step on a random-init published architecture and synthetic pairs (the command is `python -m dpo_jax.bench`).

FLOPs are counted as the TRL anchor (launch/anchors/trl_dpo_bench.py) counts them: 8N per token
(policy forward and backward 6N, reference forward 2N) or 6N with precomputed reference log-probs,
N = all parameters with tied embeddings once, attention FLOPs left out; tokens are chosen plus
rejected, 2 x seq per pair.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

import jax
import ml_collections
import numpy as np

from dpo_jax.config import base_config
from dpo_jax.data.packing import example_row_lengths
from dpo_jax.evaluation.passes import reference_logps_pass
from dpo_jax.metrics import metrics_to_floats
from dpo_jax.metrics.writer import peak_flops_per_device
from dpo_jax.models.loading import load_model, random_model_config
from dpo_jax.models.presets import PRESET_TOKENIZERS, preset
from dpo_jax.perf.workload import (
    anchor_real_tokens,
    fixed_pairs,
    host_batch,
    layout_for,
    pairs_split,
    profile_pairs,
    read_lengths,
)
from dpo_jax.run.optim import auto_adam_mu_dtype, make_optimizer
from dpo_jax.run.state import create_train_state, place_reference
from dpo_jax.sharding import data_parallel_size, make_global_batch, mesh_and_rules
from dpo_jax.training.checks import validate_config, validate_layout
from dpo_jax.training.programs import StagePrograms

# The anchor's TRL settings that touch the step: AdamW at lr 1e-6, TrainingArguments' defaults
# (no weight decay, gradient clipping at norm 1).
LEARNING_RATE = 1e-6
MAX_GRAD_NORM = 1.0


def device_memory_bytes() -> int | None:
    """The first local device's memory limit (None where the backend reports none, e.g. CPU)."""
    return (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")


def resolve_adam_mu_dtype(args: SimpleNamespace, config, device_bytes: int | None) -> str:
    """`--adam_mu_dtype=auto`: by what the step's state takes of one device (run.optim)."""
    if args.adam_mu_dtype != "auto":
        return args.adam_mu_dtype
    mesh = [int(size) for size in args.mesh.split(",")]
    devices = jax.device_count()
    known = int(np.prod([size for size in mesh if size != -1]))
    sizes = [devices // known if size == -1 else size for size in mesh]
    return auto_adam_mu_dtype(
        random_model_config(config.model, param_dtype=config.model.param_dtype).num_params(),
        state_shards=sizes[1] * sizes[2],
        device_bytes=device_bytes,
        grad_accum_steps=config.grad_accum_steps,
        reference=not config.reference.precompute_logps,
    )


def bench_config(args: SimpleNamespace, device_bytes: int | None = None) -> ml_collections.ConfigDict:
    """The run config a trainer would read for this benchmark (locked, so a wrong field fails)."""
    config = base_config()
    config.seed = args.seed
    config.model.name_or_path = "random"
    config.model.random_init_config = ml_collections.ConfigDict(preset(args.model))
    config.model.dtype = args.dtype
    config.model.param_dtype = "float32"
    config.model.remat_policy = args.remat
    config.model.attention = args.attention
    config.model.scan_layers = args.scan_layers
    config.reference.param_dtype = "bfloat16"
    config.reference.precompute_logps = args.precompute_ref
    config.tokenizer = PRESET_TOKENIZERS[args.model]
    config.data.max_length = args.seq
    config.data.max_prompt_length = args.prompt
    config.loss = "dpo"
    config.beta = 0.1
    config.optimizer = "adamw"
    config.learning_rate = LEARNING_RATE
    config.lr_schedule = "constant"
    config.warmup_steps = 0
    config.weight_decay = 0.0
    config.max_grad_norm = MAX_GRAD_NORM
    config.global_batch_size = args.pairs
    config.grad_accum_steps = args.pairs // args.micro
    config.adam_mu_dtype = resolve_adam_mu_dtype(args, config, device_bytes or device_memory_bytes())
    config.num_train_steps = 1 + args.warmup + args.steps
    config.mesh_shape = tuple(int(size) for size in args.mesh.split(","))
    config.lock()
    return config


def synthetic_pairs(rows: int, seq: int, prompt: int, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """`rows` pairs in the trainer's batch layout: a shared prompt, two different responses, no padding."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, vocab_size, size=(rows, 2, seq), dtype=np.int32)
    input_ids[:, 1, :prompt] = input_ids[:, 0, :prompt]
    loss_mask = np.zeros((rows, 2, seq), np.int32)
    loss_mask[:, :, prompt:] = 1
    return dict(
        input_ids=input_ids,
        attention_mask=np.ones((rows, 2, seq), np.int32),
        loss_mask=loss_mask,
        example_mask=np.ones((rows,), np.int32),
    )


def with_reference_logps(logps_step, params, host: dict, *, num_examples: int, num_micro: int, mesh) -> dict:
    """`host` (this process's rows of the batch, with their global `example_index`) with the reference
    log-probs of its examples attached as the trainer's loader attaches them: computed by the trainer's
    own reference pass (`evaluation.passes.reference_logps_pass`, the jitted `logps_step` of
    `StagePrograms.reference_logps`) over `num_micro` micro-batches of the rows, so the pass holds no
    more than a train step's micro-batch.

    The untrained policy is the reference, as in the trainer.
    """
    index = np.asarray(host["example_index"])
    micro_batches = [{k: np.asarray(v)[start::num_micro] for k, v in host.items()} for start in range(num_micro)]
    logps = reference_logps_pass(logps_step, params, micro_batches, num_examples, mesh, what=" of the batch")
    # [B, K] for padded batches, [R, S, K] for row batches (slots without an example hold 0).
    attached = np.where((index >= 0)[..., None], logps[np.maximum(index, 0)], 0.0).astype(np.float32)
    return {**host, "reference_logps": attached}


def _workload(args, *, row_multiple: int):
    """(pair lengths [pairs, 3], row layout or None) for the command's arguments."""
    if args.lengths:
        pair_lengths = profile_pairs(read_lengths(args.lengths), args.pairs)
    else:
        pair_lengths = fixed_pairs(args.pairs, args.seq, args.prompt)
    return pair_lengths, layout_for(args.layout, pack_length=args.pack_length, row_multiple=row_multiple)


def _compiled_flops(compiled_step, num_micro: int) -> float | None:
    """XLA's FLOP count of the compiled train step (all devices), None where the backend gives none
    or where it would be wrong: XLA counts a loop body once, so the micro-batch scan is only counted
    right with one micro-batch (--micro equal to --pairs).

    The cost of an SPMD program is that of one device's partition, hence the device count.
    """
    if num_micro != 1:
        return None
    cost = compiled_step.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = (cost or {}).get("flops")
    return float(flops) * jax.device_count() if flops else None


# Custom-call targets of the attention kernels, as they appear in a compiled program's HLO.
ATTENTION_KERNEL_CALLS = (("cudnn$fmha", "cudnn"), ("tpu_custom_call", "splash"))


def attention_kernel(hlo_text: str) -> str:
    """Which attention the compiled step runs: a cuDNN or Pallas kernel's custom call, else XLA's."""
    for call, kernel in ATTENTION_KERNEL_CALLS:
        if call in hlo_text:
            return kernel
    return "xla"


def peak_memory_gb() -> float | None:
    """Peak bytes held on any local device so far (GiB, as the anchor's torch number), None if unknown."""
    # memory_stats() is None where the backend keeps no allocator statistics (CPU).
    stats = [device.memory_stats() or {} for device in jax.local_devices()]
    peaks = [s["peak_bytes_in_use"] for s in stats if "peak_bytes_in_use" in s]
    return round(max(peaks) / 2**30, 2) if peaks else None


def _mean_loss(metrics) -> float:
    return metrics_to_floats(jax.device_get({"loss": metrics["loss"]}))["loss"]


def run_benchmark(args: SimpleNamespace) -> dict[str, Any]:
    """Build, compile, warm up and time the train step; returns the RESULT fields."""
    config = bench_config(args)
    validate_config(config)
    mesh, rules = mesh_and_rules(config.mesh_shape, config.logical_axis_rules)
    validate_layout(config, data_parallel_size=data_parallel_size(mesh), process_count=jax.process_count())

    # The trainer's path: host params -> sharded state, the bf16 reference laid out like it.
    model, host_params = load_model(config.model, param_dtype=config.model.param_dtype, seed=config.seed)
    tx, _ = make_optimizer(config)
    state, state_shardings, _ = create_train_state(model, host_params, tx, mesh, rules, seed=config.seed)
    programs = StagePrograms(config, model, mesh, rules)
    reference = None
    if programs.reference_in_step:
        reference = place_reference(host_params, state_shardings.params, config.reference.param_dtype)
    del host_params
    # The real vocabulary only: the padding to a multiple of 128 is not a parameter of the model.
    n_params = model.config.num_params()

    # Each process builds its own rows, as the trainer's loader does; one batch serves every step
    # so that no host-to-device copy or host sync sits inside the timed loop.
    pair_lengths, layout = _workload(args, row_multiple=data_parallel_size(mesh) * config.grad_accum_steps)
    if args.lengths or layout is not None:
        split = pairs_split(pair_lengths, model.config.vocab_size, model.config.vocab_size - 1, args.seed)
        host = host_batch(
            split,
            layout,
            pad_id=model.config.vocab_size - 1,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        model_tokens = int(
            example_row_lengths(split, layout.share_prompt).sum()
            if layout
            else split.sequence_lengths().sum()
        )
    else:
        host = synthetic_pairs(
            args.pairs // jax.process_count(),
            args.seq,
            args.prompt,
            model.config.vocab_size,
            seed=args.seed + jax.process_index(),
        )
        model_tokens = args.pairs * 2 * args.seq
        local_rows = args.pairs // jax.process_count()
        host["example_index"] = np.arange(local_rows, dtype=np.int32) + jax.process_index() * local_rows
    if programs.precompute_reference:
        host = with_reference_logps(
            programs.reference_logps, state.params, host,
            num_examples=args.pairs, num_micro=config.grad_accum_steps, mesh=mesh,
        )  # fmt: skip
    host.pop("example_index")  # bookkeeping for the reference pass; the step does not read it
    batch = make_global_batch(host, mesh)
    train_step = programs.train_step(state_shardings, batch)
    real_tokens = anchor_real_tokens(pair_lengths)
    start = time.perf_counter()
    # Compiled once, ahead of time: the same executable is counted and timed.
    train_step = train_step.lower(state, reference, batch).compile()
    compile_seconds = time.perf_counter() - start
    kernel = attention_kernel(train_step.as_text())
    compiled = _compiled_flops(train_step, config.grad_accum_steps)
    shape_fields = dict(
        layout=args.layout,
        lengths=os.path.basename(args.lengths) or None,
        batch_shape=list(batch["input_ids"].shape),
        real_tokens_per_step=real_tokens,
        model_tokens_per_step=model_tokens,
        computed_tokens_per_step=int(np.prod(batch["input_ids"].shape)),
        compiled_flops_per_step=compiled,
        compiled_flops_per_real_token=round(compiled / real_tokens, 1) if compiled else None,
    )
    if args.flops_only:
        return dict(
            system="dpo_jax",
            model=args.model,
            n_params=n_params,
            pairs=args.pairs,
            attention_kernel=kernel,
            **shape_fields,
        )
    state, first_metrics = train_step(state, reference, batch)
    for _ in range(args.warmup):
        state, metrics = train_step(state, reference, batch)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = train_step(state, reference, batch)
    jax.block_until_ready((state, metrics))
    step_seconds = (time.perf_counter() - start) / args.steps

    tokens_per_second = real_tokens / step_seconds
    flops_factor = programs.flops_per_token_factor
    flops_per_second = flops_factor * n_params * tokens_per_second
    peak = peak_flops_per_device()
    return dict(
        system="dpo_jax",
        model=args.model,
        n_params=n_params,
        pairs=args.pairs,
        seq=int(batch["input_ids"].shape[-1]),
        prompt=None if args.lengths else args.prompt,
        micro=args.micro,
        accum=config.grad_accum_steps,
        remat=args.remat,
        attention=args.attention,
        attention_kernel=kernel,
        adam_mu_dtype=config.adam_mu_dtype,
        scan_layers=args.scan_layers,
        precompute_ref=args.precompute_ref,
        dtype=args.dtype,
        mesh=dict(mesh.shape),
        **shape_fields,
        steps=args.steps,
        warmup=args.warmup,
        step_seconds=round(step_seconds, 5),
        tokens_per_second=round(tokens_per_second, 1),
        flops_per_token_factor=flops_factor,
        tflops=round(flops_per_second / 1e12, 3),
        mfu=round(flops_per_second / (peak * jax.device_count()), 4) if peak else None,
        compile_seconds=round(compile_seconds, 2),
        peak_memory_gb=peak_memory_gb(),
        device_kind=jax.devices()[0].device_kind,
        device_count=jax.device_count(),
        jax_version=jax.__version__,
        loss_first=_mean_loss(first_metrics),
        loss_last=_mean_loss(metrics),
    )
