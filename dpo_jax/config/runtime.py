"""Process-wide device settings the commands apply before JAX touches an accelerator.

JAX's GPU client preallocates 75% of device memory by default; Pythia-2.8B at 64 pairs x 512 tokens
(micro-batch 8, no remat) needs about 70 GB of an 80 GB H100, so the commands raise the fraction.
A value the user exported wins; the setting must land before the first device call, which is why
each command applies it at its start.
"""

from __future__ import annotations

import os

# Leave ~4 GB of an 80 GB device to cuDNN/cuBLAS workspaces and the CUDA context.
GPU_MEMORY_FRACTION = "0.95"


def apply_device_memory_settings() -> dict[str, str]:
    """Set the memory fraction unless the environment already does; returns what is in force."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_MEMORY_FRACTION)
    return {"XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"]}
