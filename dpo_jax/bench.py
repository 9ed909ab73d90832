"""Throughput of the real DPO train step on a random-init GPT-2 / Pythia, to set beside the TRL anchor.

python -m dpo_jax.bench --model=pythia-1.4b --pairs=64 --seq=512 --micro=8 [--remat=none|save_matmuls_attention|...]
    [--attention=auto|xla|cudnn|splash]
    [--precompute_ref] [--steps=10] [--warmup=2] [--mesh=-1,1,1] [--dtype=bfloat16] [--scan_layers]
JAX_PLATFORMS=cpu python -m dpo_jax.bench --model=tiny --pairs=8 --seq=32 --steps=2 --warmup=1
python -m dpo_jax.bench --program=sample --model=gpt2 --batch=16 --prompt_length=64 --new_tokens=64 \
    --dtype=float32 [--layers=6 --width=512] [--compare=transformers]   (dpo_jax.perf.sample_benchmark)

Builds the model from a published architecture (`dpo_jax.models.presets`, no download) and times the
trainer's own jitted, sharded, state-donating train step (DPO, beta 0.1, AdamW, bf16 compute, fp32
master weights, bf16 reference) on synthetic pairs of exactly `seq` tokens: a prompt of `seq // 2`
tokens and a response of the rest, every token real, the loss counted on the response (the anchor's
PROMPT=256 + RESP=255 + EOS at seq 512). Prints one line `RESULT {json}` as
launch/anchors/trl_dpo_bench.py does. FLOPs are counted as the anchor counts them: 8N per token
(policy forward and backward 6N, reference forward 2N) or 6N with precomputed reference log-probs,
N = all parameters with tied embeddings once, attention FLOPs left out; tokens are chosen plus
rejected, 2 x seq per pair.
"""

# ruff: noqa: E402  (device settings before the imports: see below)
from __future__ import annotations

import os
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

# XLA reads XLA_FLAGS once, when something first touches a backend (a module-level array is enough):
# the commands' settings go in before the imports below.
from dpo_jax.config.runtime import apply_device_memory_settings

apply_device_memory_settings()

import jax

from dpo_jax.config.command_line import (
    command_error,
    parse_command,
    peek_flag,
    print_result,
    report_user_errors,
    run_command,
)
from dpo_jax.models.config import ATTENTION_IMPLEMENTATIONS, REMAT_POLICIES
from dpo_jax.models.presets import MODEL_PRESETS
from dpo_jax.perf.benchmark import run_benchmark
from dpo_jax.perf.workload import LAYOUTS
from dpo_jax.run.optim import ADAM_MU_DTYPES

ANCHOR_PAIRS, ANCHOR_SEQ = 64, 512
CPU_PAIRS, CPU_SEQ = 8, 64


FLAGS = (
    ("program", str, "train", "train: the DPO train step; sample: the sampler (dpo_jax.perf.sample_benchmark)"),
    ("model", str, "pythia-1.4b", "a published architecture (dpo_jax.models.presets)"),
    ("pairs", int, None, "pairs per optimizer step (default 64; 8 on CPU)"),
    ("seq", int, None, "tokens per sequence (default 512; 64 on CPU)"),
    ("prompt", int, None, "prompt tokens (default seq // 2)"),
    ("micro", int, None, "pairs per micro-batch (default pairs)"),
    ("remat", str, "none", "remat policy of each block"),
    ("attention", str, "auto", "attention kernel (auto: by platform)"),
    ("scan_layers", bool, False, "scan over the blocks"),
    ("adam_mu_dtype", str, "auto", "Adam first moment (auto: bf16 when the fp32 state would fill over half a device)"),
    ("precompute_ref", bool, False, "reference log-probs in the batch"),
    ("steps", int, 10, "timed steps"),
    ("warmup", int, 2, "untimed steps after the compiling one"),
    ("mesh", str, "-1,1,1", "data,fsdp,tensor sizes; one -1 fills"),
    ("dtype", str, "bfloat16", "compute dtype"),
    ("seed", int, 0, "init and data seed"),
    ("lengths", str, "", "a length profile (launch/lengths/lengths_hh.tsv): realistic shapes"),
    ("layout", str, "padded", "padded sequences, or rows with the prompt shared and/or examples packed"),
    ("pack_length", int, 0, "tokens per packed row (0 = longest example)"),
    ("flops_only", bool, False, "compile and count FLOPs, run nothing"),
)  # fmt: skip
CHOICES = dict(
    program=("train", "sample"), model=sorted(MODEL_PRESETS), remat=REMAT_POLICIES, attention=ATTENTION_IMPLEMENTATIONS,
    adam_mu_dtype=("auto", *ADAM_MU_DTYPES), layout=LAYOUTS,
)  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> SimpleNamespace:
    args = parse_command("python -m dpo_jax.bench", argv, FLAGS, doc=__doc__, choices=CHOICES)
    if args.program != "train":
        command_error(f"--program={args.program}: give --program once")
    # The anchor's shape (64 pairs x 512) needs tens of GB of activations even for the tiny preset
    # (GPT-2's 50k vocabulary): a CPU gets a shape that fits unless one is asked for.
    on_cpu = jax.default_backend() == "cpu"
    args.pairs = args.pairs or (CPU_PAIRS if on_cpu else ANCHOR_PAIRS)
    args.seq = args.seq or (CPU_SEQ if on_cpu else ANCHOR_SEQ)
    args.micro = args.micro or args.pairs
    args.prompt = args.seq // 2 if args.prompt is None else args.prompt
    if args.pairs < 1 or args.micro < 1 or args.pairs % args.micro:
        command_error(f"--pairs={args.pairs} must be a positive multiple of --micro={args.micro}")
    if args.lengths and not os.path.isfile(args.lengths):
        command_error(f"--lengths={args.lengths}: no such file")
    if args.pack_length < 0:
        command_error("--pack_length must be >= 0")
    if not 1 <= args.prompt < args.seq:
        command_error(f"--prompt={args.prompt} must leave at least one response token in --seq={args.seq}")
    if args.steps < 1 or args.warmup < 0:
        command_error("--steps must be >= 1 and --warmup >= 0")
    return args


@report_user_errors
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    # bench --program=train|sample: the program picks the table the full parse reads (each table declares
    # `program` too, so either spelling, `--program=sample` or `--program sample`, parses).
    if peek_flag(argv, "program", "train") == "sample":
        from dpo_jax.perf.sample_benchmark import parse_args as parse_sample_args
        from dpo_jax.perf.sample_benchmark import run_sample_benchmark

        result = run_sample_benchmark(parse_sample_args(argv))
    else:
        result = run_benchmark(parse_args(argv))
    print_result(result)
    return result


if __name__ == "__main__":
    run_command(main)
