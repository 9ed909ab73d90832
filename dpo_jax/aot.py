"""Compile a config's train step, eval step and reference pass (`stage=ppo`: rollout, score,
rollout_targets, ppo_update) for a TPU slice or H100s, on a CPU.

    python -m dpo_jax.aot --config=configs/tldr.py --target=v4-8 [--config.field=value ...]
    python -m dpo_jax.aot --config=configs/imdb.py --target=h100,v5e-8
    python -m dpo_jax.aot --config=configs/tldr.py --program=sample --target=v5e-16   # the evaluations'
    python -m dpo_jax.aot --config=configs/imdb.py --program=score --target=v5e-8    # decode / scoring

Targets: v4-8, v4-32, v5e-8, v5e-16, v5p-8, v5p-64 (libtpu, `pip install -e ".[aot]"`), h100 and
8xh100 (the CUDA plugin from the same extra; no GPU needed). Prints a table and one
`RESULT {json}` line per program: per-device argument / temp / output / alias GiB, the peak with
what else stays resident, the chip's HBM, `fits` and the margin, the collectives per step, the
custom calls and the attention they imply, and on TPU the compiler's estimated step time and MFU.
`--program=sample` compiles the mesh sampler's decode program and `--program=score` the scorer's pass
at the evaluation's batch (the config's `sampling` fields): per-device params and KV cache, the
collectives per generated token, and the HBM-bandwidth bound per token (`dpo_jax.perf.aot_sampling`).
With `data.share_prompt` / `data.pack` the batches are the loader's rows in their worst case
(`dpo_jax.perf.aot.BatchShape`).
Exit status 1 when a program does not fit (with what would), 2 when the mesh cannot be laid out.
JAX_PLATFORMS defaults to cpu here: the compile needs no accelerator.
"""

# ruff: noqa: E402  (device settings before the imports: see below)
import os

# Before jax is imported (the config file imports it): compiling needs no accelerator, and an
# installed CUDA plugin would otherwise try, and fail, to find a GPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The XLA settings `main` and `bench` run with, so the compiler decides here as it will there; XLA
# reads XLA_FLAGS once, when something first touches a backend, so before the imports below.
from dpo_jax.config.runtime import apply_device_memory_settings

apply_device_memory_settings()

from dpo_jax.config.command_line import CONFIG_FILE, parse_command, print_error, print_result, run_command

FLAGS = (
    ("config", CONFIG_FILE, None, "Path to a config file (configs/*.py[:variant])."),
    ("target", list, ["v4-8"], "Comma-separated targets (see the module docstring)."),
    ("program", str, "train", "train: the stage's programs; sample / score: the evaluations' decode program / "
     "scoring pass at the config's `sampling` shapes."),
    ("responses", int, 0, "Responses per example: 0 = the stage's (1 for sft, 2 = pairs otherwise); more for rankings."),
)  # fmt: skip
CHOICES = dict(program=("train", "sample", "score"))


def parse_args(argv):
    return parse_command(
        "python -m dpo_jax.aot", argv, FLAGS, doc=__doc__, choices=CHOICES, required=("config",)
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    from dpo_jax.perf.aot import AotConfigError, CompilerOutOfMemory, compile_config, format_table
    from dpo_jax.perf.targets import TargetUnavailableError, get_target

    results, status = [], 0
    for name in args.target:
        try:
            target_results, advice = compile_config(
                args.config, get_target(name), responses=args.responses, program=args.program
            )
        except (AotConfigError, TargetUnavailableError, ValueError) as e:
            print_error(f"{name}: {e}")
            status = max(status, 2)
            continue
        except CompilerOutOfMemory as e:  # the compiler's own verdict: does not fit, nothing to tabulate
            print_error(f"{name}: does not fit. {e}")
            status = max(status, 1)
            continue
        for result in target_results:
            print_result(result)
        results.extend(target_results)
        if advice:
            print_error(f"{name}: does not fit. {advice}")
            status = max(status, 1)
    if results:
        print(format_table(results))
    return status


if __name__ == "__main__":
    run_command(main)
