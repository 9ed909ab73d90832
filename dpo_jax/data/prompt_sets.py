"""Evaluation prompt sets: a seeded random subset of a split's distinct prompts, with ids to report.

The DPO paper evaluates on a random subset of the test split, the same subset for every method. A first-N
slice is biased wherever a split is ordered (HH's test split by subset, IMDb's by label), so every
evaluation command picks its prompts here: `choose` keeps `num` of the candidates drawn without
replacement by a seeded generator (in the split's order, so the pick does not depend on how the caller
iterates), and names each by `prompt_id`, a hash of its text. Two results whose `prompt_ids` are equal
were provably judged on the same prompts, whatever commands and temperatures produced them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from dpo_jax import UserError

T = TypeVar("T")


def prompt_id(text: str) -> str:
    """A short stable name of a prompt: the first 12 hex digits of the sha256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class PromptSet:
    seed: int
    available: int  # candidates that qualified (distinct prompts of the split, after filters)
    ids: tuple[str, ...]  # prompt_id of each chosen prompt, in the split's order

    @property
    def digest(self) -> str:
        """One name for the whole set (equal digests: the same prompts), short enough for a RESULT line."""
        return hashlib.sha256(",".join(self.ids).encode()).hexdigest()[:12]

    def summary(self) -> dict[str, Any]:
        return {"prompt_seed": self.seed, "prompts_available": self.available, "prompt_set": self.digest}

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "prompt_ids": list(self.ids)}


def choose(
    candidates: Sequence[T],
    num: int,
    *,
    seed: int,
    what: str,
    text: Callable[[T], str] = str,
) -> tuple[list[T], PromptSet]:
    """(`num` of the distinct `candidates` drawn by `seed`, kept in their order; the set's record).

    `num` 0 keeps every candidate. Fewer than `num` candidates is a UserError naming `what` (the split,
    the file and the filter the candidates passed), never a silently smaller set."""
    if num < 0:
        raise UserError(f"{what}: the number of prompts must be >= 0, got {num}")
    seen: set[str] = set()
    distinct = []
    for candidate in candidates:
        key = text(candidate)
        if key not in seen:
            seen.add(key)
            distinct.append(candidate)
    if num and len(distinct) < num:
        raise UserError(
            f"{what}: {num} prompts asked for, but only {len(distinct)} distinct prompts qualify; "
            "lower the number of prompts or use a larger split"
        )
    if num and num < len(distinct):
        rows = np.sort(np.random.default_rng(seed).choice(len(distinct), size=num, replace=False))
        distinct = [distinct[int(r)] for r in rows]
    return distinct, PromptSet(seed, len(seen), tuple(prompt_id(text(c)) for c in distinct))
