"""Compile the benchmark's train step for an H100 on this CPU host and report what the compiler says.

JAX_PLATFORMS=cpu python launch/h100_step_memory.py --model=pythia-2.8b --pairs=64 --seq=512 --micro=8 \
    [--attention=auto] [--remat=none] [--target=dpo_jax/perf/h100_target_config.txtpb] [--rows=8,1024]

Nothing runs (deviceless ahead-of-time compilation, docs/aot.md): the answers are the XLA:GPU
compiler's own for `python -m dpo_jax.bench` with the same flags and the same device settings
(`dpo_jax.config.runtime`): per-device argument, temporary,
output and alias bytes, the peak that implies, whether XLA rematerialised anything to fit (its
rematerialisation pass names the clones `*.remat*`), the attention kernel in the program (cuDNN
custom calls) and the pre-optimisation FLOP count. Prints one line `AOT {json}`. `--rows=R,L` compiles
the step on shared-prompt / packed rows instead (R rows of L tokens, 4 example slots, K = 2; README
"One prompt pass per pair"). Needs the CUDA
plugin (jax[cuda12]); the trace-time cuDNN checks are answered from the target: the compute
capability always, cuDNN's version (dnn_version_info) without a local cuDNN (the compiler itself needs
no cuDNN library).
"""

# ruff: noqa: E402  (XLA_FLAGS must be set before the imports below)
from __future__ import annotations

import argparse
import json
import re
import sys

# XLA reads XLA_FLAGS once per process, when its compiler first needs them: set them before anything
# can touch a backend.
from dpo_jax.config.runtime import apply_device_memory_settings

SETTINGS = apply_device_memory_settings()  # as `python -m dpo_jax.bench` runs

import jax
from jax.experimental import topologies

from dpo_jax.bench import parse_args as bench_args
from dpo_jax.data.packing import ROW_FIELDS
from dpo_jax.models import build_model
from dpo_jax.models.loading import random_model_config
from dpo_jax.perf.benchmark import bench_config
from dpo_jax.perf.targets import H100_TARGET_CONFIG, cudnn_checks_from_target
from dpo_jax.run.optim import make_optimizer
from dpo_jax.run.state import state_init_fn
from dpo_jax.sharding import abstract_sharded_state, batch_sharding
from dpo_jax.sharding.mesh import DEFAULT_LOGICAL_AXIS_RULES, make_mesh
from dpo_jax.training.programs import StagePrograms

GIB = 2**30
# The H100 compile target the package ships (dpo_jax/perf/h100_target_config.txtpb).
DEFAULT_TARGET = H100_TARGET_CONFIG
H100_HBM_BYTES = 80 * 10**9


def _abstract_batch(args, rows: str, mesh) -> dict:
    """The step's batch shapes: `args.pairs` padded pairs of `args.seq` tokens, or `rows` ("R,L")."""

    def spec(shape, dtype=jax.numpy.int32):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))

    if rows:
        num_rows, length = (int(x) for x in rows.split(","))
        examples = (num_rows, 4)  # example slots per row, as dpo_jax.data.packing lays them out
        batch = {name: spec((num_rows, length)) for name in ROW_FIELDS}
        batch.update(example_mask=spec(examples), example_index=spec(examples))
        batch["response_lengths"] = spec((*examples, 2))
    else:
        examples = (args.pairs,)
        batch = {
            name: spec((args.pairs, 2, args.seq)) for name in ("input_ids", "attention_mask", "loss_mask")
        }
        batch["example_mask"] = spec(examples)
    if args.precompute_ref:
        batch["reference_logps"] = spec((*examples, 2), jax.numpy.float32)
    return batch


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default=str(DEFAULT_TARGET), help="an XLA:GPU target description")
    parser.add_argument("--hlo_out", default="", help="write the optimised HLO text here")
    parser.add_argument("--rows", default="", help="R,L: a step on R packed rows of L tokens")
    own, rest = parser.parse_known_args(argv)
    args = bench_args(rest)
    settings = SETTINGS
    target_config = open(own.target).read()
    topo = topologies.get_topology_desc(platform="cuda", target_config=target_config, topology="1x1x1")
    mesh = make_mesh((1, 1, 1), devices=topo.devices)
    target_memory = re.search(r"device_memory_size:\s*(\d+)", target_config)
    config = bench_config(args, device_bytes=int(target_memory.group(1)) if target_memory else H100_HBM_BYTES)
    # Only the architecture is needed: a model description without weights.
    model = build_model(random_model_config(config.model, param_dtype=config.model.param_dtype))
    tx, _ = make_optimizer(config)
    abstract_state, shardings = abstract_sharded_state(
        state_init_fn(model, tx, config.seed),
        jax.random.PRNGKey(config.seed),
        mesh,
        DEFAULT_LOGICAL_AXIS_RULES,
    )
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )
    programs = StagePrograms(config, model, mesh, DEFAULT_LOGICAL_AXIS_RULES)
    reference = None
    if programs.reference_in_step:
        reference = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, jax.numpy.bfloat16, sharding=a.sharding),
            abstract_state.params,
        )
    batch = _abstract_batch(args, own.rows, mesh)
    step = programs.train_step(shardings, batch)
    # Trace for the H100: attention="auto" reads the platform from the mesh in context.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), cudnn_checks_from_target(target_config):
        lowered = step.lower(abstract_state, reference, batch)
    flops = (lowered.cost_analysis() or {}).get("flops")
    compiled = lowered.compile()
    memory = compiled.memory_analysis()
    hlo = compiled.as_text()
    if own.hlo_out:
        with open(own.hlo_out, "w") as f:
            f.write(hlo)
    peak = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )
    result = dict(
        model=args.model,
        pairs=args.pairs,
        rows=own.rows or None,
        seq=None if own.rows else args.seq,
        micro=args.micro,
        attention=args.attention,
        remat=args.remat,
        adam_mu_dtype=config.adam_mu_dtype,
        precompute_ref=args.precompute_ref,
        argument_gib=round(memory.argument_size_in_bytes / GIB, 2),
        output_gib=round(memory.output_size_in_bytes / GIB, 2),
        alias_gib=round(memory.alias_size_in_bytes / GIB, 2),
        temp_gib=round(memory.temp_size_in_bytes / GIB, 2),
        peak_gb=round(peak / 1e9, 2),
        fits_80gb=peak <= H100_HBM_BYTES,
        xla_remat_clones=len(re.findall(r"\S+\.remat\S* = ", hlo)),
        mem_fraction=settings["XLA_PYTHON_CLIENT_MEM_FRACTION"],
        xla_flags=settings["XLA_FLAGS"],
        custom_calls=sorted(set(re.findall(r'custom_call_target="([^"]+)"', hlo))),
        pre_optimisation_tflops=round(flops / 1e12, 2) if flops else None,
    )
    print("AOT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
