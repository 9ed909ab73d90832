"""Which method a trained run is, and which of its settings its method's curve sweeps: one function.

The paper's figures draw one curve per method through a sweep of that method's own knob: DPO and its
variants through beta, PPO through its KL coefficient (or, with the adaptive controller, its KL target),
unlikelihood through its weight alpha, Best-of-N through N. SFT and preferred-FT have no knob. A run's
method follows from its stage and objective, never from `config.loss` alone (a PPO run also carries the
default `loss="dpo"`, and would otherwise join the DPO curve at the unused beta):

    stage="sft"           -> "sft" on demonstrations, "preferred-ft" on preference data (pairs, rankings)
    stage="dpo"           -> the loss ("dpo", "ipo", "hinge", "robust", "plackett_luce", "unlikelihood")
    stage="ppo"           -> "ppo" with a learned reward model (a dpo_jax reward_model run or its
                             export), "ppo-gt" with the ground-truth reward (a given reward function or
                             any other classifier)
    stage="reward_model"  -> "reward_model" (not a policy)
    best_of > 1           -> "best-of-n" of the run's policy, whatever its stage
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dpo_jax import UserError

RUN_CONFIG = "run_config.json"  # a dpo_jax workdir's config (runs.py reads runs by it)
PREFERENCE_KINDS = ("pairs", "ranked")


@dataclasses.dataclass(frozen=True)
class Method:
    name: str  # the curve the run's point belongs to
    parameter: str | None = None  # the swept setting: "beta", "kl_coef", "kl_target", "alpha", "N"
    value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.name, "parameter": self.parameter, "value": self.value}


def run_method(config, *, best_of: int = 1) -> Method:
    """The method and sweep parameter of a run trained with `config` (a run_config.json ConfigDict);
    `best_of` > 1 when its policy is evaluated as Best-of-N of its samples."""
    if best_of > 1:
        return Method("best-of-n", "N", float(best_of))
    stage = str(config.stage)
    if stage == "sft":
        return Method("preferred-ft" if data_kind(config.data) in PREFERENCE_KINDS else "sft")
    if stage == "ppo":
        ppo = config.ppo
        name = "ppo" if _is_learned_reward_model(str(ppo.reward_model)) else "ppo-gt"
        target = float(ppo.get("kl_target", 0.0) or 0.0)
        if target > 0:  # the adaptive controller: the coefficient is where it starts, the target is the knob
            return Method(name, "kl_target", target)
        return Method(name, "kl_coef", float(ppo.kl_coef))
    if stage == "reward_model":
        return Method("reward_model")
    loss = str(config.loss)
    if loss == "unlikelihood":
        return Method(loss, "alpha", float(config.get("unlikelihood_alpha", 1.0)))
    return Method(loss, "beta", float(config.beta))


def data_kind(data) -> str:
    """What each row of the run's training data holds: "pairs", "ranked", "single" or "prompt_only". A
    named source knows; a `local` one is read for its columns (the run's data must still be there)."""
    from dpo_jax.data.sources import SOURCES

    spec = SOURCES.get(str(data.source))
    if spec is not None:
        return spec.kind
    from dpo_jax.data.local_schemas import local_schema
    from dpo_jax.data.readers import open_split

    try:
        table = open_split(str(data.path), str(data.train_split), hub_config=None, single_file_ok=True)
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot tell SFT from preferred-FT: the run's data {data.path!r} is unreadable ({error})"
        ) from error
    return local_schema(table.columns, table.description)[2]


def _is_learned_reward_model(path: str) -> bool:
    """Whether `path` is a dpo_jax reward_model run or the export of one (WORKDIR/export)."""
    if not path:
        return False
    import json

    for directory in (Path(path), Path(path).parent):
        config_file = directory / RUN_CONFIG
        if config_file.is_file():
            try:
                return json.loads(config_file.read_text()).get("stage") == "reward_model"
            except json.JSONDecodeError as error:
                raise UserError(f"{config_file}: not valid JSON ({error})") from error
    return False
