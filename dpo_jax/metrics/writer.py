"""Where metrics go: stdout, WORKDIR/metrics.jsonl, TensorBoard, optionally W&B; throughput figures.

Only process 0 writes. Each logged step is one JSON object in metrics.jsonl, with at least
`step`, `loss`, `rewards/accuracies` and `rewards/margins` for preference stages; a non-finite value is
written as JSON null (strict JSON has no NaN). A resumed run passes `resume_step`: rows of later steps,
written before the restored checkpoint's run was killed, are dropped, so every step appears once. A
metrics.jsonl deleted while the run writes is recreated, with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

import jax
from etils import epath

logger = logging.getLogger("dpo_jax")

METRICS_FILENAME = "metrics.jsonl"

# Dense bf16 peak FLOP/s per chip, from the vendors' datasheets; used for MFU only.
PEAK_BF16_FLOPS = {
    "h100": 989e12,
    "h200": 989e12,
    "a100": 312e12,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v6 lite": 918e12,
}


def peak_flops_per_device() -> float | None:
    kind = jax.devices()[0].device_kind.lower()
    for name, flops in PEAK_BF16_FLOPS.items():
        if name in kind:
            return flops
    return None


class Throughput:
    """Seconds per step, and tokens/s, TFLOP/s and MFU, over the steps since the last call (8N FLOPs per
    token for DPO: policy forward+backward 6N plus reference forward 2N, as the performance anchor
    counts). `tokens_per_step=None` (a stage with no one token count per step, e.g. PPO's rollouts and
    updates): seconds per step only."""

    def __init__(
        self, num_params: int = 0, tokens_per_step: int | None = None, flops_per_token_factor: int = 0
    ):
        self.flops_per_token = flops_per_token_factor * num_params
        self.tokens_per_step = tokens_per_step
        self.peak = peak_flops_per_device()
        self._last_time = time.perf_counter()
        self._last_step = None

    def update(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        out = {}
        if self._last_step is not None and step > self._last_step:
            seconds = (now - self._last_time) / (step - self._last_step)
            out = {"perf/step_seconds": seconds}
        if out and self.tokens_per_step is not None:
            tokens_per_s = self.tokens_per_step / seconds
            flops = tokens_per_s * self.flops_per_token
            out.update({"perf/tokens_per_second": tokens_per_s, "perf/tflops": flops / 1e12})
            if self.peak:
                out["perf/mfu"] = flops / (self.peak * jax.device_count())
        self._last_time, self._last_step = now, step
        return out


class MetricsWriter:
    def __init__(
        self,
        workdir: str,
        *,
        tensorboard: bool,
        wandb_project: str = "",
        config=None,
        resume_step: int | None = None,
    ):
        self.enabled = jax.process_index() == 0
        self.path = epath.Path(workdir, METRICS_FILENAME)
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not self.enabled:
            return
        if resume_step is not None:
            _drop_rows_after(self.path, resume_step)
        self._jsonl = self.path.open("a")
        if tensorboard:
            self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"))
        if wandb_project:
            import wandb  # optional dependency: pip install dpo_jax[wandb]

            self._wandb = wandb.init(
                project=wandb_project, dir=workdir, config=config.to_dict() if config else None
            )

    def write(self, step: int, metrics: dict[str, float], *, echo: bool = True) -> None:
        if not self.enabled or not metrics:  # nothing measured (an evaluation without an eval split)
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
        if not self.path.exists():
            logger.warning(
                "%s vanished while the run was writing it: recreated from step %d on", self.path, step
            )
            self._jsonl.close()
            self._jsonl = self.path.open("a")
        self._jsonl.write(json.dumps({"step": int(step), **clean}, allow_nan=False) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=int(step))
        if echo:
            shown = " ".join(
                f"{k}={_fmt(v)}" for k, v in sorted(metrics.items()) if not k.startswith("data/")
            )
            logger.info("step %d: %s", step, shown)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _summary_writer_class():
    """tensorboardX's SummaryWriter without the `import torch` its module tries (~2 s per process, for
    type hints only): torch is hidden while tensorboardX loads, unless this process has it already."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX catches
    try:
        from tensorboardX import SummaryWriter
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


def _drop_rows_after(path: epath.Path, step: int) -> None:
    """Rewrites `path` without the rows of steps after `step` (atomically: a kill leaves old or new)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _row_step(line) <= step]
    if len(kept) == len(lines):
        return
    logger.info("%s: dropped %d rows after the restored step %d", path, len(lines) - len(kept), step)
    partial = path.parent / (path.name + ".tmp")
    partial.write_text("".join(kept))
    partial.replace(path)


def _row_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):  # a line cut by a kill mid-write: dropped with the later rows
        return math.inf


def _fmt(value: float) -> str:
    value = float(value)
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
