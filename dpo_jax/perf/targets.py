"""Accelerator targets for deviceless ahead-of-time compilation: names -> topology descriptions.

A target is what a run will meet: a TPU slice (every chip of a possibly multi-host slice) or one
host of H100s. `topology_devices(target)` returns the devices of its topology, which JAX can
compile for on a CPU-only machine: TPU through libtpu (`pip install "jax[tpu]"`), H100 through
the CUDA plugin (`jax-cuda12-plugin`, no GPU or CUDA toolkit needed) and the target description
`h100_target_config.txtpb` beside this file (an H100 80GB HBM3: 132 SMs, cuDNN 9.8, CUDA 12.9).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re

GIB = 2**30

H100_TARGET_CONFIG = os.path.join(os.path.dirname(__file__), "h100_target_config.txtpb")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    platform: str  # "tpu" or "cuda"
    topology: str  # libtpu's topology name, or the CUDA plugin's "slices x hosts x devices"
    chips: int
    hosts: int
    hbm_bytes: int  # per chip, as the chip's datasheet gives it
    peak_bf16_flops: float  # dense, per chip
    hbm_bandwidth: float  # bytes/s per chip, the datasheet's
    # libtpu's chip layout: v4 and v5p pair two TensorCores into one "megacore" device per chip;
    # chips_per_host fixes which chips share a host (a process) in multi-host slices.
    megacore: bool = False
    chips_per_host: tuple[int, int, int] = (2, 2, 1)

    @property
    def hbm_gib(self) -> float:
        return self.hbm_bytes / GIB


# Datasheet figures: v4 32 GiB / 275 TFLOP/s / 1228 GB/s, v5e 16 GiB / 197 / 819, v5p 95 GiB / 459 /
# 2765, H100 SXM 80 GB / 989 (dense bf16) / 3350. An H100's usable memory is the target description's
# device_memory_size.
_H100_BYTES = 84_929_347_584
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("v4-8", "tpu", "v4:2x2x1", 4, 1, 32 * GIB, 275e12, 1228e9, megacore=True),
        Target("v4-32", "tpu", "v4:2x2x4", 16, 4, 32 * GIB, 275e12, 1228e9, megacore=True),
        Target("v5e-8", "tpu", "v5e:2x4", 8, 1, 16 * GIB, 197e12, 819e9, chips_per_host=(2, 4, 1)),
        Target("v5e-16", "tpu", "v5e:4x4", 16, 4, 16 * GIB, 197e12, 819e9),
        Target("v5p-8", "tpu", "v5p:2x2x1", 4, 1, 95 * GIB, 459e12, 2765e9, megacore=True),
        Target("v5p-64", "tpu", "v5p:4x4x2", 32, 8, 95 * GIB, 459e12, 2765e9, megacore=True),
        Target("h100", "cuda", "1x1x1", 1, 1, _H100_BYTES, 989e12, 3350e9),
        Target("8xh100", "cuda", "1x1x8", 8, 1, _H100_BYTES, 989e12, 3350e9),
    )
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}")
    return TARGETS[name]


class TargetUnavailableError(RuntimeError):
    """The compiler for a target is not installed here (the `aot` extra)."""


def topology_devices(target: Target) -> list:
    """The target's devices, in the order a slice enumerates them; no accelerator is needed."""
    from jax.experimental import topologies

    # A deviceless compile touches no TPU, so it need not hold libtpu's one-process-per-host lock
    # (/tmp/libtpu_lockfile): compiles may run side by side, e.g. beside a test run.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        if target.platform == "tpu":
            options = dict(chips_per_host_bounds=target.chips_per_host)
            if target.megacore:
                options["chip_config_name"] = "megacore"
            topology = topologies.get_topology_desc(platform="tpu", topology_name=target.topology, **options)
        else:
            with open(H100_TARGET_CONFIG) as f:
                target_config = f.read()
            topology = topologies.get_topology_desc(
                platform="cuda", target_config=target_config, topology=target.topology
            )
    except Exception as e:  # jax raises a plain RuntimeError/ValueError when the plugin is missing
        package = '"jax[tpu]"' if target.platform == "tpu" else '"jax-cuda12-plugin" "jax-cuda12-pjrt"'
        raise TargetUnavailableError(
            f"cannot build the {target.name} topology ({target.platform} {target.topology}): {e}. "
            f'Install the compiler with `pip install -e ".[aot]"` (or {package}).'
        ) from e
    devices = list(topology.devices)
    hosts = len({device.process_index for device in devices})
    if len(devices) != target.chips or hosts != target.hosts:
        raise AssertionError(
            f"{target.name}: topology has {len(devices)} devices on {hosts} hosts, expected {target.chips} on {target.hosts}"
        )
    return devices


def jax_has_platform_plugin(platform: str) -> bool:
    """Whether the compiler for `platform` ("tpu", "cuda") is installed (without initialising it)."""
    import importlib.util

    module = {"tpu": "libtpu", "cuda": "jax_plugins.xla_cuda12"}[platform]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def target_cudnn_version(target_config: str) -> int:
    """cuDNN's version as an XLA:GPU target description gives it (dnn_version_info), in cuDNN's encoding."""
    match = re.search(r"dnn_version_info\s*{\s*major:\s*(\d+)\s*minor:\s*(\d+)", target_config)
    if match is None:
        raise ValueError("the GPU target description has no dnn_version_info")
    return int(match.group(1)) * 10000 + int(match.group(2)) * 100


def target_compute_capability(target_config: str) -> tuple[int, int]:
    """The GPU's compute capability as an XLA:GPU target description gives it (cuda_compute_capability;
    a field left out is 0, as protobuf's text format leaves zeros out)."""
    match = re.search(r"cuda_compute_capability\s*{([^}]*)}", target_config)
    if match is None:
        raise ValueError("the GPU target description has no cuda_compute_capability")
    fields = dict(re.findall(r"(major|minor):\s*(\d+)", match.group(1)))
    return int(fields.get("major", 0)), int(fields.get("minor", 0))


def _capability(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@contextlib.contextmanager
def cudnn_checks_from_target(target_config: str | None = None):
    """Answer JAX's trace-time cuDNN checks from the target rather than from this host.

    `jax.nn.dot_product_attention(implementation="cudnn")` asks, while tracing, the locally loaded
    cuDNN library for its version and the local GPU for its compute capability (which sets the widest
    head cuDNN takes: 256 from Hopper on, else 128; `models.attention.cudnn_max_head_dim` asks the
    same). A CPU host has no GPU and, without the NVIDIA wheels, no cuDNN, though the compiler needs
    neither to emit the cuDNN custom call. The target says which GPU and cuDNN the program runs on. A
    host with a local cuDNN answers the version for itself; the compute capability is the target's.
    """
    from jax._src.cudnn import fused_attention_stablehlo as checks

    if target_config is None:
        with open(H100_TARGET_CONFIG) as f:
            target_config = f.read()
    capability = target_compute_capability(target_config)
    answers = dict(
        check_compute_capability=lambda at_least: capability >= _capability(at_least),
        is_cuda_compute_capability_equal=lambda equal: capability == _capability(equal),
    )
    try:
        checks.check_cudnn_version()
    except RuntimeError:
        version = target_cudnn_version(target_config)
        answers["check_cudnn_version"] = lambda: version
    originals = {name: getattr(checks, name) for name in answers}
    for name, answer in answers.items():
        setattr(checks, name, answer)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(checks, name, original)
