"""How a synthetic step trains: its config from the top-level one, and its run in its own directory.

Which steps run, which are reused and which resume is the recipe engine's business
(dpo_jax/recipes/engine.py: each step is one `python -m dpo_jax.synthetic.steps` command); a step
trains with the trainer's own resume, so a preempted one continues from its last checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from dpo_jax.run import FINISHED_MARKER, Preempted
from dpo_jax.training import run_training

logger = logging.getLogger("dpo_jax")


def stage_config(config, *, stage: str, loss: str, init: str, overrides=None):
    """The top-level config turned into one stage's training config; `overrides` entries that are
    None keep the top-level value."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.stage, c.loss = stage, loss
        c.model.name_or_path = init
        c.reference.name_or_path = ""  # the initial policy, pi_ref for every stage after SFT
        c.export_hf = True  # later stages and the evaluator read the exported policy
        c.update({name: value for name, value in dict(overrides or {}).items() if value is not None})
    return c


def train_stage(
    stage_cfg, stage_dir: Path, make_data: Callable | None, *, run: Callable | None = None
) -> float:
    """Train one stage in `stage_dir` (resuming its checkpoint, if any); returns the seconds spent.

    The stage trains with `run_training` on `make_data()`, or by calling `run()` (PPO, which makes its
    own data by sampling)."""
    start = time.time()
    logger.info("stage %s: training (%s, loss %s)", stage_dir.name, stage_cfg.stage, stage_cfg.loss)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if run is None:
        if run_training(stage_cfg, str(stage_dir), make_data(), tokenizer=None).preempted:
            raise Preempted(f"stage {stage_dir.name} was preempted; rerun to resume")
    else:
        run()
    if not (stage_dir / FINISHED_MARKER).exists():
        raise RuntimeError(
            f"stage {stage_dir.name} stopped before its last step (preempted?); rerun to resume"
        )
    return time.time() - start
