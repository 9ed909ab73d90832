"""Process-wide device settings the commands apply before JAX touches an accelerator.

JAX's GPU client preallocates 75% of device memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION);
the benchmark's larger shapes need nearly all of an 80 GB H100, so the commands raise it unless the
user set it. It must land before the first device call, which is why each command applies it at
its start.
"""

from __future__ import annotations

import os

# Leave ~4 GB of an 80 GB device to cuDNN/cuBLAS workspaces and the CUDA context.
GPU_MEMORY_FRACTION = "0.95"


def apply_device_memory_settings() -> dict[str, str]:
    """Set the memory fraction unless the environment already does; returns the value in force."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_MEMORY_FRACTION)
    return {"XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"]}
