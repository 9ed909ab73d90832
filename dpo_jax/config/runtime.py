"""Process-wide settings the commands apply before JAX touches an accelerator: device memory, and the
multi-host runtime (which process writes).

- XLA_PYTHON_CLIENT_MEM_FRACTION: JAX's GPU client preallocates 75% of device memory by default; the
  benchmark's larger shapes need nearly all of an 80 GB H100, so the commands raise it to 0.95.
- `--xla_gpu_memory_limit_slop_factor=100` (XLA_FLAGS): XLA:GPU's scheduler and rematerialisation
  pass aim below a memory limit of (device memory - arguments - outputs) x slop / 100, slop 95 by
  default. With XLA's conservative device-memory base (80% of the device when the compile is not told
  the allocator's size, as in a deviceless compile) the default slop made XLA rematerialise 35
  instructions of the Pythia-2.8B micro-8 step that fits without any (66.7 of 84.9 GB, BENCHMARKS.md
  section 2.1); at 100 the compiled step has none.

Each is set only where the user has not set it, and must land before the first device call, which is
why each command applies them at its start.
"""

from __future__ import annotations

import os

# Leave ~4 GB of an 80 GB device to cuDNN/cuBLAS workspaces and the CUDA context.
GPU_MEMORY_FRACTION = "0.95"
GPU_MEMORY_LIMIT_SLOP_FLAG = "--xla_gpu_memory_limit_slop_factor"
GPU_MEMORY_LIMIT_SLOP = "100"


def apply_device_memory_settings() -> dict[str, str]:
    """Set what the user has not; returns the memory fraction and XLA_FLAGS in force."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_MEMORY_FRACTION)
    flags = os.environ.get("XLA_FLAGS", "")
    if GPU_MEMORY_LIMIT_SLOP_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {GPU_MEMORY_LIMIT_SLOP_FLAG}={GPU_MEMORY_LIMIT_SLOP}".strip()
    return {
        "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"],
        "XLA_FLAGS": os.environ["XLA_FLAGS"],
    }


# --- The multi-host runtime -------------------------------------------------------------------------
# Every command that runs a program on the devices (main, sample, winrate, make_pairs, frontier,
# judge_agreement) declares these flags and calls `initialize_distributed` first: on a multi-host slice
# every process must join every program, whichever command it is.
DISTRIBUTED_FLAGS = (
    ("distributed", str, "auto", "jax.distributed.initialize: auto = when the environment asks."),
    ("distributed_timeout_s", int, 300, "Seconds to wait for the other processes."),
)
DISTRIBUTED_CHOICES = {"distributed": ("auto", "on", "off")}


def wants_distributed(mode: str, environ=os.environ) -> bool:
    """`mode` "on" / "off" as given; "auto": an explicit coordinator (SLURM scripts, local multi-process
    tests), a multi-host TPU slice, or a Slurm job step of several tasks."""
    if mode != "auto":
        return mode == "on"
    return (
        bool(environ.get("JAX_COORDINATOR_ADDRESS"))
        or "," in environ.get("TPU_WORKER_HOSTNAMES", "")
        or int(environ.get("SLURM_NTASKS", "1")) > 1
    )


def initialize_distributed(mode: str = "auto", timeout_s: int = 300) -> bool:
    """jax.distributed.initialize when `mode` asks for it (`wants_distributed`), before any other JAX
    call; on a TPU VM it finds its peers by itself, elsewhere it reads JAX_COORDINATOR_ADDRESS /
    JAX_NUM_PROCESSES / JAX_PROCESS_ID. Returns whether it initialized."""
    if not wants_distributed(mode):
        return False
    import jax

    kwargs = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs = dict(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    jax.distributed.initialize(initialization_timeout=timeout_s, **kwargs)
    return True


def writes_outputs() -> bool:
    """Whether this process writes the command's files and prints its results: process 0 alone (the
    others run the same programs in lockstep and write nothing)."""
    import jax

    return jax.process_index() == 0
