"""Ahead-of-time compilation of the trainer's programs for an accelerator this machine does not have.

`compile_config(config, target)` builds the trainer's own jitted train step, eval step and (with
`reference.precompute_logps`) reference log-prob step for the config's model, mesh and shapes, on a
TPU topology or an H100 target, from `jax.ShapeDtypeStruct` arguments carrying their shardings,
and compiles them with the target's real compiler. Nothing runs: the answers are the compiler's.
The batches are those the loader builds for the config: padded [B, K, L], or with `data.share_prompt`
/ `data.pack` its rows [R, L'] in the worst case any data within `data.max_length` can produce
(`BatchShape`).

Per program it reports the per-device memory (`memory_analysis`), what else stays resident while
it runs (the optimizer state during eval; the whole train state during the reference pass), the
peak against the chip's HBM, the collectives per step and the custom calls (which attention
kernel, if any) from the optimised HLO, and on TPU the compiler's cost-model step time and the
MFU it implies, both labelled as estimates (the GPU compiler gives no cost model here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from dpo_jax.data.packing import ROW_FIELDS, RowLayout, batch_layout, worst_case_row_shape
from dpo_jax.models.config import as_dtype
from dpo_jax.models.loading import describe_model
from dpo_jax.perf.hlo import attention_implementation, summarize_hlo
from dpo_jax.perf.targets import GIB, Target, cudnn_checks_from_target, topology_devices
from dpo_jax.run.optim import make_optimizer
from dpo_jax.run.state import state_init_fn
from dpo_jax.sharding import (
    DEFAULT_LOGICAL_AXIS_RULES,
    MESH_AXES,
    abstract_sharded_state,
    batch_sharding,
    data_parallel_size,
    resolve_mesh_shape,
)
from dpo_jax.training.programs import StagePrograms, stage_module, stage_uses_reference


class AotConfigError(ValueError):
    """The config cannot be laid out on the target; the message says what would."""


class CompilerOutOfMemory(RuntimeError):
    """The compiler itself refused a program: its temporaries alone exceed the chip's memory."""


@dataclasses.dataclass
class Program:
    name: str
    jitted: Callable
    args: tuple
    resident_bytes: int  # per device, alive during the program but not among its arguments
    model_flops: float  # per call, over all devices (6N per trained token, 2N per forward token)
    rows: int  # examples per call (in a row layout: rows per call, one example each in the worst case)
    row_shape: tuple[int, int] | None = None  # (row length, slots) of a row layout; None when padded
    mesh: Mesh | None = None  # the program's own mesh, when not the config's (the sampler's decode mesh)
    details: Callable[[Any], dict] | None = None  # compiled program -> extra RESULT fields


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of an abstract tree whose leaves carry shardings (the largest shard)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return total


def target_mesh(mesh_shape, target: Target) -> Mesh:
    """The ("data", "fsdp", "tensor") mesh over the target's devices, laid out on its physical torus."""
    devices = topology_devices(target)
    try:
        shape = resolve_mesh_shape(mesh_shape, len(devices))
    except ValueError as e:
        raise AotConfigError(
            f"{e} The {target.name} target has {target.chips} chips: e.g. --config.mesh_shape="
            f"'(1, {target.chips}, 1)' (fsdp over every chip) or '(-1, 1, 1)' (data parallel)."
        ) from e
    if target.platform == "tpu":
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices)
    else:
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def _array(mesh: Mesh, shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))


def _padded_batch(mesh: Mesh, rows, responses, length, *, reference_logps: bool, eval_pass: bool):
    """[B, K, L] padded batches, as `data.loader` builds them without a row layout."""
    batch = {
        name: _array(mesh, (rows, responses, length), jnp.int32)
        for name in ("input_ids", "attention_mask", "loss_mask")
    }
    batch["example_mask"] = _array(mesh, (rows,), jnp.int32)
    if eval_pass:
        batch["example_index"] = _array(mesh, (rows,), jnp.int32)
    if reference_logps:
        batch["reference_logps"] = _array(mesh, (rows, responses), jnp.float32)
    return batch


def _row_batch(mesh: Mesh, rows, responses, shape, *, reference_logps: bool):
    """[R, L'] rows with [R, S] slots, as `data.packing.build_rows` lays them out (any pass)."""
    row_length, slots = shape
    batch = {name: _array(mesh, (rows, row_length), jnp.int32) for name in ROW_FIELDS}
    for name in ("example_mask", "example_index"):
        batch[name] = _array(mesh, (rows, slots), jnp.int32)
    batch["response_lengths"] = _array(mesh, (rows, slots, responses), jnp.int32)
    if reference_logps:
        batch["reference_logps"] = _array(mesh, (rows, slots, responses), jnp.float32)
    return batch


@dataclasses.dataclass(frozen=True)
class BatchShape:
    """The abstract batches of one config: padded [B, K, L], or the loader's rows in the worst case.

    Without data the worst case stands for every step: one example per row (so rows = examples, also
    when packing, whose row count varies with the data) and rows as long as any example can make them
    (`data.packing.worst_case_row_shape`). `layout` is None for padded batches.
    """

    layout: RowLayout | None
    responses: int
    max_length: int

    @classmethod
    def from_config(cls, config, responses: int) -> BatchShape:
        layout = batch_layout(config.data, stage=config.stage, row_multiple=1)  # as the loader lays it out
        return cls(layout, responses, int(config.data.max_length))

    @property
    def name(self) -> str:
        if self.layout is None:
            return "padded"
        return "+".join(name for name in ("share_prompt", "pack") if getattr(self.layout, name))

    def row_shape(self, examples: int) -> tuple[int, int] | None:
        """(row length, slots) for a pass over batches of `examples`; None when padded."""
        if self.layout is None:
            return None
        return worst_case_row_shape(
            self.layout, max_length=self.max_length, num_responses=self.responses, batch_size=examples
        )

    def tokens(self, examples: int) -> int:
        """Tokens the model computes for a batch of `examples`, padding included."""
        shape = self.row_shape(examples)
        return examples * (self.responses * self.max_length if shape is None else shape[0])

    def batch(self, mesh: Mesh, examples: int, *, reference_logps: bool, eval_pass: bool) -> dict:
        shape = self.row_shape(examples)
        if shape is None:
            return _padded_batch(
                mesh, examples, self.responses, self.max_length,
                reference_logps=reference_logps, eval_pass=eval_pass,
            )  # fmt: skip
        return _row_batch(mesh, examples, self.responses, shape, reference_logps=reference_logps)


def _optimizer(config):
    resolved = config.copy_and_resolve_references()
    with resolved.unlocked():
        # Only the schedule's shape depends on it; the state and the step do not.
        resolved.total_steps = max(int(config.num_train_steps), int(config.warmup_steps) + 1)
    return make_optimizer(resolved)[0]


def build_programs(config, mesh: Mesh, rules, *, responses: int = 2) -> tuple[list[Program], Any]:
    """The trainer's jitted programs with abstract arguments, as `training.loop` builds them."""
    policy_cfg = describe_model(config.model, param_dtype=config.model.param_dtype)
    model = stage_module(config, policy_cfg)
    stage = StagePrograms(config, model, mesh, rules)
    abstract_state, _ = abstract_sharded_state(
        state_init_fn(model, _optimizer(config), config.seed), jax.random.PRNGKey(config.seed), mesh, rules
    )
    reference_dtype = as_dtype(config.reference.param_dtype)
    reference = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, reference_dtype, sharding=leaf.sharding),
        abstract_state.params,
    )
    precompute, reference_in_step = stage.precompute_reference, stage.reference_in_step
    global_rows = int(config.global_batch_size)
    micro_rows = global_rows // int(config.grad_accum_steps)
    eval_rows = int(config.eval_batch_size) or micro_rows
    n = policy_cfg.num_params()
    state_bytes = per_device_bytes(abstract_state)
    params_bytes = per_device_bytes(abstract_state.params)

    shape = BatchShape.from_config(config, responses)
    train_batch = shape.batch(mesh, global_rows, reference_logps=precompute, eval_pass=False)
    train = stage.train_step(abstract_state_shardings(abstract_state), train_batch)
    programs = [
        Program(
            "train_step",
            train,
            (abstract_state, reference if reference_in_step else None, train_batch),
            resident_bytes=0,
            model_flops=(6 + 2 * reference_in_step) * n * shape.tokens(global_rows),
            rows=global_rows,
            row_shape=shape.row_shape(global_rows),
        )
    ]
    eval_batch = shape.batch(mesh, eval_rows, reference_logps=precompute, eval_pass=True)
    eval_tokens = shape.tokens(eval_rows)
    programs.append(
        Program(
            "eval_step",
            stage.eval_step,
            (abstract_state.params, reference if reference_in_step else None, eval_batch),
            # The optimizer state stays on the devices while the loop evaluates.
            resident_bytes=state_bytes - params_bytes,
            model_flops=(2 + 2 * reference_in_step) * n * eval_tokens,
            rows=eval_rows,
            row_shape=shape.row_shape(eval_rows),
        )
    )
    if precompute:
        ref_batch = shape.batch(mesh, eval_rows, reference_logps=False, eval_pass=True)
        programs.append(
            Program(
                "reference_logps",
                stage.reference_logps,
                (reference, ref_batch),
                resident_bytes=state_bytes,  # the train state exists before the pass
                model_flops=2 * n * eval_tokens,
                rows=eval_rows,
                row_shape=shape.row_shape(eval_rows),
            )
        )
    return programs, policy_cfg


def abstract_state_shardings(abstract_state):
    return jax.tree.map(lambda leaf: leaf.sharding, abstract_state)


def _cost_seconds(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # the GPU compiler has no cost model here
        return None
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    seconds = (cost or {}).get("optimal_seconds")
    return float(seconds) if seconds and seconds > 0 else None


def analyze(program: Program, target: Target, mesh: Mesh) -> dict[str, Any]:
    """Lower and compile one program for the target; the RESULT fields."""
    # Traced for the target: on an H100 the attention may be cuDNN's, whose trace-time checks (cuDNN's
    # version, the GPU's compute capability) the target answers on a host without them.
    cudnn_checks = cudnn_checks_from_target() if target.platform == "cuda" else contextlib.nullcontext()
    mesh = program.mesh or mesh
    with cudnn_checks:
        try:
            compiled = program.jitted.lower(*program.args).compile()
        except Exception as error:  # jax raises its runtime error type; only the compiler's OOM is ours
            if "RESOURCE_EXHAUSTED" not in str(error):
                raise
            reason = next(line for line in str(error).splitlines() if "RESOURCE_EXHAUSTED" in line)
            raise CompilerOutOfMemory(f"{program.name} on {target.name}: {reason.strip()}") from None
    memory = compiled.memory_analysis()
    argument, output = memory.argument_size_in_bytes, memory.output_size_in_bytes
    alias, temp = memory.alias_size_in_bytes, memory.temp_size_in_bytes
    peak = argument + output - alias + temp + program.resident_bytes
    hlo = summarize_hlo(compiled.as_text())
    result: dict[str, Any] = dict(
        program=program.name,
        target=target.name,
        device_kind=topology_devices(target)[0].device_kind,
        chips=target.chips,
        hosts=target.hosts,
        mesh=dict(mesh.shape),
        rows=program.rows,
        row_length=None if program.row_shape is None else program.row_shape[0],
        slots=None if program.row_shape is None else program.row_shape[1],
        argument_gib=round(argument / GIB, 3),
        output_gib=round(output / GIB, 3),
        alias_gib=round(alias / GIB, 3),
        temp_gib=round(temp / GIB, 3),
        resident_other_gib=round(program.resident_bytes / GIB, 3),
        peak_gib=round(peak / GIB, 3),
        peak_bytes=int(peak),
        resident_other_bytes=int(program.resident_bytes),
        hbm_gib=round(target.hbm_gib, 2),
        fits=bool(peak <= target.hbm_bytes),
        margin_gib=round((target.hbm_bytes - peak) / GIB, 3),
        collectives=hlo["collectives"],
        # a loop whose trip count neither XLA nor its condition gives counted once: the counts are a floor
        collectives_loops_counted_once=hlo["loops_without_trip_count"],
        custom_calls=hlo["custom_calls"],
        attention=attention_implementation(hlo["custom_calls"]),
    )
    seconds = _cost_seconds(compiled)
    if seconds is not None:
        result["estimated_step_seconds"] = round(seconds, 5)
        result["estimated_mfu"] = round(
            program.model_flops / (seconds * target.peak_bf16_flops * target.chips), 4
        )
        result["estimate_note"] = "an estimate from the XLA cost model (optimal_seconds), not a measurement"
    if program.details is not None:
        result.update(program.details(compiled))
    return result


def fit_advice(config, target: Target, mesh: Mesh, results: list[dict], model_cfg) -> str | None:
    """What to change when a program does not fit (None when everything fits)."""
    failing = [r for r in results if not r["fits"]]
    if not failing:
        return None
    worst = min(failing, key=lambda r: r["margin_gib"])
    message = (
        f"{worst['program']} needs {worst['peak_gib']:.1f} GiB per device on {target.name} "
        f"({target.hbm_gib:.0f} GiB HBM per chip)."
    )
    # Whatever the mesh and batch: fp32 params, gradients and two optimizer moments over every chip.
    floor = 16 * model_cfg.num_params() / target.chips / GIB
    if floor > target.hbm_gib:
        return (
            f"{message} No mesh of {target.name} fits this model: fp32 params, gradients and optimizer "
            f"moments alone take {floor:.1f} GiB per chip sharded over all {target.chips} chips."
        )
    hints = []
    if mesh.shape["fsdp"] * mesh.shape["tensor"] < target.chips:
        hints.append(f"shard the state over every chip: --config.mesh_shape='(1, {target.chips}, 1)'")
    accum = int(config.grad_accum_steps)
    micro = int(config.global_batch_size) // accum
    if config.stage == "ppo":
        minibatches = int(config.ppo.num_minibatches)
        if micro // minibatches // data_parallel_size(mesh) > 1:
            hints.append(f"smaller PPO minibatches: --config.ppo.num_minibatches={2 * minibatches}")
    elif micro // data_parallel_size(mesh) > 1:
        hints.append(
            f"halve the micro-batch: --config.grad_accum_steps={2 * accum} (micro-batch {micro // 2} pairs)"
        )
    if config.model.remat_policy != "full":
        hints.append("recompute activations: --config.model.remat_policy=full")
    if stage_uses_reference(config) and not config.reference.precompute_logps:
        hints.append("take the reference out of the step: --config.reference.precompute_logps=True")
    return f"{message} Try: {'; '.join(hints)}." if hints else message


PROGRAMS = ("train", "sample", "score")


def compile_config(
    config, target: Target, *, responses: int = 0, program: str = "train"
) -> tuple[list[dict], str | None]:
    """Compile the config's programs for `target` -> (RESULT dicts, advice when something does not fit).

    responses: per example, 0 = the stage's (1 for SFT, 2 otherwise).
    program: "train" (the stage's programs: train and eval steps, the reference pass; PPO's four),
    "sample" (the evaluations' decode program) or "score" (their scoring pass): `perf.aot_sampling`."""
    if program not in PROGRAMS:
        raise AotConfigError(f"unknown program {program!r}; expected one of {', '.join(PROGRAMS)}")
    mesh = target_mesh(config.mesh_shape, target)
    rules = tuple(tuple(rule) for rule in config.logical_axis_rules) or DEFAULT_LOGICAL_AXIS_RULES
    dp = data_parallel_size(mesh)
    if program != "train":
        return _compile_evaluation(config, target, mesh, rules, program)
    if config.stage == "ppo":
        return _compile_ppo(config, target, mesh, rules)
    micro = int(config.global_batch_size) // int(config.grad_accum_steps)
    if int(config.global_batch_size) % int(config.grad_accum_steps) or micro % dp:
        raise AotConfigError(
            f"global_batch_size={config.global_batch_size} / grad_accum_steps={config.grad_accum_steps} "
            f"gives micro-batches of {micro} pairs, which the data-parallel size {dp} "
            f"(data x fsdp of mesh {dict(mesh.shape)}) must divide."
        )
    # 0: the stage's own (SFT and preferred-FT train on one response per example; the others on pairs).
    responses = responses or (1 if config.stage == "sft" else 2)
    programs, model_cfg = build_programs(config, mesh, rules, responses=responses)
    results = []
    for program in programs:
        result = analyze(program, target, mesh)
        result.update(
            model=config.model.name_or_path,
            num_params=model_cfg.num_params(),
            seq=int(config.data.max_length),
            responses=responses,
            layout=BatchShape.from_config(config, responses).name,
            micro_batch=micro,
            grad_accum_steps=int(config.grad_accum_steps),
            remat=config.model.remat_policy,
            precompute_ref=bool(config.reference.precompute_logps),
        )
        results.append(result)
    return results, fit_advice(config, target, mesh, results, model_cfg)


def _compile_ppo(config, target: Target, mesh: Mesh, rules) -> tuple[list[dict], str | None]:
    """PPO's programs (rollout, score, rollout_targets, ppo_update), reported like the train step's."""
    from dpo_jax.perf.aot_ppo import ppo_programs

    minibatch = int(config.global_batch_size) // int(config.ppo.num_minibatches)
    dp = data_parallel_size(mesh)
    if int(config.global_batch_size) % int(config.ppo.num_minibatches) or minibatch % dp:
        raise AotConfigError(
            f"global_batch_size={config.global_batch_size} / ppo.num_minibatches={config.ppo.num_minibatches}"
            f" gives minibatches of {minibatch} prompts, which the data-parallel size {dp} must divide."
        )
    programs, model_cfg = ppo_programs(
        config, mesh, rules, _optimizer(config), per_device_bytes, Program, device_bytes=target.hbm_bytes
    )
    results = []
    for program in programs:
        result = analyze(program, target, mesh)
        result.update(
            model=config.model.name_or_path,
            num_params=model_cfg.num_params(),
            seq=int(config.data.max_prompt_length) + int(config.ppo.max_new_tokens),
            responses=1,
            layout="padded",
            micro_batch=minibatch,
            grad_accum_steps=1,  # PPO updates one minibatch at a time (ppo.loop)
            remat=config.model.remat_policy,
            precompute_ref=False,
            stage="ppo",
        )
        results.append(result)
    return results, fit_advice(config, target, mesh, results, model_cfg)


def _compile_evaluation(config, target: Target, mesh: Mesh, rules, name: str) -> tuple[list, str | None]:
    """The evaluations' decode program (`sample`) or scoring pass (`score`) at the config's `sampling`
    shapes, reported like the train step (and what bounds a decode: `perf.aot_sampling`)."""
    from dpo_jax.perf.aot_sampling import sample_program, score_program

    try:
        if name == "sample":
            program, model_cfg = sample_program(config, mesh, rules, target, Program)
        else:
            program, model_cfg = score_program(config, target, list(mesh.devices.flat), Program)
    except ValueError as e:
        raise AotConfigError(str(e)) from e
    result = analyze(program, target, mesh)
    result.update(
        model=config.model.name_or_path if name == "sample" else result["scorer"],
        seq=result.get("prompt_length", 0) + result.get("new_tokens", 0) or result.get("sequence_length"),
        responses=1,
        layout="padded",
    )
    result.pop("estimated_mfu", None)  # FLOPs of a decode say little; the bandwidth bound says more
    if name == "sample" and "estimated_step_seconds" in result:
        # Measured on libtpu 0.0.42.1: the cost model's FLOPs and time barely move with the number of
        # generated tokens (8 -> 64 tokens: +13% FLOPs), i.e. it counts the decode loop's body once.
        result["estimate_note"] = (
            "an estimate from the XLA cost model (optimal_seconds) of the prefill and ONE loop iteration "
            "(the cost model counts a while loop's body once), not a measurement"
        )
    if result["fits"]:
        return [result], None
    return [result], (
        f"{name} needs {result['peak_gib']:.1f} GiB per device on {target.name} "
        f"({target.hbm_gib:.0f} GiB HBM per chip). Try a smaller --config.sampling.batch_size"
        + (" or fewer --config.sampling.num_samples per call." if name == "sample" else ".")
    )


def _batch_cell(result: dict) -> str:
    """B x K x L for padded batches, R x L' (row length) for a row layout."""
    if result.get("row_length") is None:
        return f"{result['rows']}x{result['responses']}x{result['seq']}"
    return f"{result['rows']}x{result['row_length']} rows"


def format_table(results: list[dict]) -> str:
    header = (
        "program", "target", "mesh", "batch", "args", "temp", "other", "peak", "HBM", "fits", "est. MFU",
    )  # fmt: skip
    rows = [header]
    for r in results:
        mesh = "x".join(str(v) for v in r["mesh"].values())
        mfu = f"{r['estimated_mfu']:.2f}" if "estimated_mfu" in r else "-"
        rows.append(
            (
                r["program"], r["target"], mesh, _batch_cell(r), f"{r['argument_gib']:.2f}", f"{r['temp_gib']:.2f}",
                f"{r['resident_other_gib']:.2f}", f"{r['peak_gib']:.2f}", f"{r['hbm_gib']:.1f}",
                "yes" if r["fits"] else "NO", mfu,
            )
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
