"""Checkpoints (Orbax: async, keep-N, atomic, restore onto any mesh) and the preemption signal."""

from dpo_jax.checkpoint.checkpointer import (
    CHECKPOINT_DIRNAME,
    DATA_ITEM,
    STATE_ITEM,
    Checkpointer,
    model_signature,
)
from dpo_jax.checkpoint.disk_full import CheckpointDiskFullError
from dpo_jax.checkpoint.preemption import (
    PREEMPTED_EXIT,
    install_preemption_handler,
    preemption_requested,
    should_stop_for_preemption,
)

__all__ = [
    "CHECKPOINT_DIRNAME",
    "DATA_ITEM",
    "PREEMPTED_EXIT",
    "STATE_ITEM",
    "CheckpointDiskFullError",
    "Checkpointer",
    "install_preemption_handler",
    "model_signature",
    "preemption_requested",
    "should_stop_for_preemption",
]
