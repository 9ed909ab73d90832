"""How the synthetic experiment runs its stages: each stage's config from the top-level one, and a stage
trained once into its own directory, recorded with the settings it was trained with.

A stage directory holds `stage_identity.json` (a digest of the stage's training fields and of the data
it saw); rerunning into it with other settings fails instead of reporting stale results, and a stage
with the FINISHED marker is loaded from its export instead of retrained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import jax

from dpo_jax.config.fields import training_fields
from dpo_jax.objectives import uses_reference
from dpo_jax.run import FINISHED_MARKER, Preempted
from dpo_jax.training import run_training

logger = logging.getLogger("dpo_jax")

IDENTITY_FILE = "stage_identity.json"


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


# The stages build their token arrays themselves: the `data` fields are not read.
_UNREAD = ("data",)


def stage_identity(stage_cfg, data_identity: str) -> dict:
    """The stage's fields that change its training (`dpo_jax.config.fields`) and its data, digested."""
    fields = {
        name: value
        for name, value in training_fields(stage_cfg).items()
        if name.split(".")[0] not in _UNREAD
    }
    # A stage that ignores beta (SFT, the baselines, the reward model; PPO has its own kl_coef) does
    # not depend on it, so every beta of a sweep shares those stages; only PPO reads the PPO settings.
    if stage_cfg.stage in ("reward_model", "ppo") or not uses_reference(stage_cfg.loss):
        fields.pop("beta")
    if stage_cfg.stage != "ppo":
        fields = {name: value for name, value in fields.items() if not name.startswith("ppo.")}
    return {"config": digest(fields), "data": data_identity}


def train_stage(
    stage_cfg, stage_dir: Path, make_data: Callable | None, data_identity: str, *, run: Callable | None = None
) -> float:
    """Train one stage unless it has finished; returns the seconds spent (0 when skipped).

    The stage trains with `run_training` on `make_data()`, or by calling `run()` (PPO, which makes its
    own data by sampling)."""
    identity = stage_identity(stage_cfg, data_identity)
    identity_file = stage_dir / IDENTITY_FILE
    if identity_file.exists():
        recorded = json.loads(identity_file.read_text())
        if recorded != identity:
            raise ValueError(
                f"{stage_dir} was trained with other settings ({recorded} != {identity}); "
                "use a new workdir (or delete that stage) to train with these"
            )
    if (stage_dir / FINISHED_MARKER).exists():
        logger.info("stage %s: finished earlier, loading its export", stage_dir.name)
        return 0.0
    start = time.time()
    logger.info("stage %s: training (%s, loss %s)", stage_dir.name, stage_cfg.stage, stage_cfg.loss)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        identity_file.write_text(json.dumps(identity))
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
