"""The objective's settings as one typed value: what crosses from the trainer into `objectives/`.

The trainer builds a `LossOptions` from its config once (`training.checks.loss_options_from_config`);
constructing it validates every field against the loss registry (`validate_loss_options`), so a
value that exists is one the loss can honour, and nothing in `objectives/` reads a config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dpo_jax import UserError
from dpo_jax.objectives.losses import loss_option_names, validate_loss_options

# The reward model's losses by config name -> the reference-free preference loss they are on scores.
REWARD_LOSSES = {"bradley_terry": "dpo", "plackett_luce": "plackett_luce"}


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """A validated objective: the loss and its settings.

    `reward_model`: the loss is a reward model's (`REWARD_LOSSES`: Bradley-Terry or Plackett-Luce on
    its scores, beta 1, no reference). `num_responses`: the K the data gives, for validation only
    (None: 1 for `sft`, else max(2, top_k)).
    """

    loss_name: str
    beta: float = 0.1
    length_normalize: bool = False
    reference_free: bool = False
    label_smoothing: float = 0.0
    top_k: int = 0
    unlikelihood_alpha: float = 1.0
    reward_model: bool = False
    num_responses: int | None = None

    def __post_init__(self):
        responses = self.num_responses
        if responses is None:
            responses = 1 if self.loss_name == "sft" else max(2, self.top_k)
        common = dict(label_smoothing=self.label_smoothing, num_responses=responses, top_k=self.top_k)
        if not self.reward_model:
            validate_loss_options(
                self.loss_name, beta=self.beta, reference_free=self.reference_free,
                length_normalize=self.length_normalize, unlikelihood_alpha=self.unlikelihood_alpha, **common,
            )  # fmt: skip
            return
        if self.loss_name not in REWARD_LOSSES:
            raise UserError(
                f"config.stage='reward_model' with config.loss={self.loss_name!r}; a reward model trains with "
                f"one of {sorted(REWARD_LOSSES)}"
            )
        validate_loss_options(REWARD_LOSSES[self.loss_name], beta=1.0, reference_free=True, **common)

    @property
    def registry_name(self) -> str:
        """The name of the loss in the registry (`losses.LOSS_NAMES`)."""
        return REWARD_LOSSES[self.loss_name] if self.reward_model else self.loss_name

    def loss_kwargs(self) -> dict[str, Any]:
        """The options the registry's loss function takes (by its own option names), as
        `preference_loss` reads them; `reference_free` for every policy loss that can have a reference."""
        kwargs = {name: getattr(self, name) for name in loss_option_names(self.registry_name)}
        if not self.reward_model and self.loss_name != "sft":  # a reward model's loss has no reference
            kwargs["reference_free"] = self.reference_free
        return kwargs
