"""Process-wide device settings the commands apply before JAX touches an accelerator.

Pythia-2.8B at 64 pairs x 512 tokens (micro-batch 8, no gradient checkpointing) needs about 70 GiB of
an 80 GB H100. Two defaults stand in the way, and the commands change both unless the user set them:
- JAX's GPU client preallocates 75% of device memory (XLA_PYTHON_CLIENT_MEM_FRACTION);
- XLA:GPU plans each program for 80% of device memory and silently rematerialises (recomputes
  matmuls, +FLOPs) to stay under it (--xla_gpu_memory_limit_slop_factor, in percent).
Both must be set before the first device call, which is why each command applies them at its start.
"""

from __future__ import annotations

import os

# Leave ~4 GB of an 80 GB device to cuDNN/cuBLAS workspaces and the CUDA context.
GPU_MEMORY_FRACTION = "0.95"
XLA_MEMORY_LIMIT_FLAG = "--xla_gpu_memory_limit_slop_factor"
XLA_MEMORY_LIMIT_PERCENT = 95


def apply_device_memory_settings() -> dict[str, str]:
    """Set both unless the environment already does; returns the settings in force."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_MEMORY_FRACTION)
    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_MEMORY_LIMIT_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_MEMORY_LIMIT_FLAG}={XLA_MEMORY_LIMIT_PERCENT}".strip()
    return {name: os.environ[name] for name in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_FLAGS")}
