"""Evaluations over training: which of a run's checkpoints to evaluate, and the policies they hold.

The DPO paper draws its IMDb frontier with one point per checkpoint and plots the HH win rate against
fine-tuning steps. `--checkpoints` on `frontier` and `winrate` selects the steps:
    final     the run's exported policy only (the default)
    all       every checkpoint the run kept
    every:N   the checkpoints at multiples of N steps
The checkpoints are read with the read-only reader (saved_policy.policies_over_training), so a run still
training is not disturbed; the run must keep them (`config.keep_checkpoints` at least the number saved,
since only the newest are kept otherwise). A step that does not read is reported, never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from dpo_jax import UserError
from dpo_jax.analysis.runs import load_policy
from dpo_jax.analysis.saved_policy import policies_over_training


def parse_checkpoints(text: str) -> int | None:
    """None for "final" (the export), else N: evaluate the checkpoints at multiples of N ("all": 1)."""
    if text in ("", "final"):
        return None
    if text == "all":
        return 1
    match = re.fullmatch(r"every:([1-9]\d*)", text)
    if not match:
        raise UserError(f"--checkpoints={text!r}: expected final, all or every:N with N >= 1")
    return int(match.group(1))


def run_policies(run, every: int | None, *, dtype: str = "float32") -> Iterator[tuple[int | None, Any, str]]:
    """(step, (model, params), "") per policy of `run` to evaluate: its export (step None) when `every`
    is None, else its checkpoints at multiples of `every`; (step, None, reason) for one that does not read."""
    if every is None:
        yield None, load_policy(run.model_path, dtype=dtype), ""
        return
    for step, saved, reason in policies_over_training(run.path, every, dtype=dtype):
        yield step, (None if saved is None else (saved.model, saved.params)), reason
