"""Deviceless targets for tests: a TPU or H100 mesh on this CPU host (jax.experimental.topologies).

Compiling for them gives the real XLA:TPU / XLA:GPU program (its HLO, its memory analysis) without
the accelerator; nothing runs. The H100 needs the CUDA plugin (jax[cuda12]); libtpu comes with
jax[tpu]. See shared/aot/README.md.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib

import jax
from jax.experimental import topologies

from dpo_jax.perf import targets

# libtpu takes a machine-wide lock file by default; compiling (never running) for a TPU topology
# in several processes at once (pytest workers, other sessions) is safe without it.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

H100_TARGET_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "dpo_jax/perf/h100_target_config.txtpb"
SHARED_H100_TARGET_CONFIG = pathlib.Path("/work/shared/aot/h100_target_config.txtpb")


def cuda_plugin_missing() -> str | None:
    """Why an H100 target cannot be built here, or None when it can."""
    if importlib.util.find_spec("jax_plugins.xla_cuda12") is None:
        return "the CUDA plugin (jax[cuda12]) is not installed: no XLA:GPU compiler on this host"
    if h100_target_config() is None:
        return "no H100 target description (h100_target_config.txtpb) found"
    return None


def h100_target_config() -> str | None:
    for path in (H100_TARGET_CONFIG, SHARED_H100_TARGET_CONFIG):
        if path.exists():
            return path.read_text()
    return None


@functools.cache
def tpu_mesh(topology: str = "v5e:2x2", axis: str = "data") -> jax.sharding.Mesh:
    topo = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    return topologies.make_mesh(topo=topo, mesh_shape=(len(topo.devices),), axis_names=(axis,))


@functools.cache
def h100_mesh(axis: str = "data") -> jax.sharding.Mesh:
    topo = topologies.get_topology_desc(platform="cuda", target_config=h100_target_config(), topology="1x1x1")
    return topologies.make_mesh(topo=topo, mesh_shape=(1,), axis_names=(axis,))


def cudnn_checks_from_target():
    """JAX's trace-time cuDNN checks (version, compute capability) answered from the H100 target
    (dpo_jax.perf.targets)."""
    return targets.cudnn_checks_from_target(h100_target_config())
