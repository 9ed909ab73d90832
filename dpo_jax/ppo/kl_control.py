"""The coefficient of PPO's KL penalty over a run: fixed (`ppo.kl_coef`), or steered toward a target KL.

With `ppo.kl_target` > 0 the coefficient starts at `ppo.kl_coef` and follows the adaptive controller of
Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", arXiv:1909.08593, section
2.2), as TRL's `AdaptiveKLController` implements it: after a rollout batch of n episodes whose mean
sequence KL(pi || pi_ref) is `kl`,

    coef <- coef * (1 + clip(kl / kl_target - 1, -0.2, 0.2) * n / kl_horizon)

so a KL above the target raises the penalty and one below lowers it, by at most 20% per `kl_horizon`
episodes. The coefficient a rollout uses is the one before its own update (it shapes that rollout's
rewards). It is part of the run's state: saved with each checkpoint's position (`position`), restored on
resume (`kl_controller(settings, position)`), and logged each step as `ppo/kl_coef`.
"""

from __future__ import annotations

import dataclasses
import math

from dpo_jax import UserError

POSITION_KEY = "kl_coef"  # the coefficient's entry in a PPO checkpoint's position
MAX_PROPORTIONAL_ERROR = 0.2  # Ziegler et al.'s clip of kl / target - 1


@dataclasses.dataclass
class KLController:
    coef: float
    target: float = 0.0  # 0: a fixed coefficient
    horizon: float = 10000.0

    @property
    def adaptive(self) -> bool:
        return self.target > 0

    def update(self, kl: float, num_episodes: int) -> float:
        """The coefficient after a rollout batch of `num_episodes` whose mean sequence KL was `kl`. A
        non-finite KL (a diverged step, which the run reports as non-finite) leaves it unchanged."""
        if self.adaptive and math.isfinite(kl):
            error = min(max(kl / self.target - 1.0, -MAX_PROPORTIONAL_ERROR), MAX_PROPORTIONAL_ERROR)
            self.coef *= 1.0 + error * num_episodes / self.horizon
        return self.coef

    def position(self) -> dict[str, float]:
        """What a checkpoint keeps of the controller (JSON floats round-trip exactly)."""
        return {POSITION_KEY: float(self.coef)}


def kl_controller(settings, position: dict | None = None) -> KLController:
    """The controller of `config.ppo` settings, at the coefficient a checkpoint's `position` saved (a
    resumed run goes on with it) or, for a fresh run, at `settings.kl_coef`."""
    coef = float(settings.kl_coef)
    if position and POSITION_KEY in position:
        coef = float(position[POSITION_KEY])
    return KLController(
        coef, target=float(settings.get("kl_target") or 0.0), horizon=float(settings.get("kl_horizon", 10000))
    )


def validate_kl_settings(settings) -> None:
    """UserError naming the field for a KL setting that cannot run."""
    target = settings.get("kl_target") or 0.0
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target >= 0):
        raise UserError(
            f"config.ppo.kl_target={target!r} must be >= 0 (0 or None: a fixed config.ppo.kl_coef)"
        )
    horizon = settings.get("kl_horizon", 10000)
    if target > 0 and not (isinstance(horizon, (int, float)) and math.isfinite(horizon) and horizon > 0):
        raise UserError(f"config.ppo.kl_horizon={horizon!r} must be > 0 (episodes) with config.ppo.kl_target")
    if target > 0 and not settings.kl_coef > 0:
        raise UserError(
            f"config.ppo.kl_coef={settings.kl_coef!r}: the adaptive controller (config.ppo.kl_target) "
            "scales the coefficient, so it must start > 0"
        )
