"""The DPO objective family as pure functions: sequence log-probs, preference losses, the batch loss."""

from dpo_jax.objectives.batch_loss import (
    UNLIKELIHOOD_MIN_COMPLEMENT,
    batch_loss,
    make_loss_fn,
    reference_logps,
    reward_batch_loss,
    token_unlikelihood,
)
from dpo_jax.objectives.logps import HiddenStates, sequence_logps, sequence_logps_from_hidden, token_logps
from dpo_jax.objectives.losses import (
    LOSS_NAMES,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    plackett_luce_loss,
    preference_loss,
    robust_loss,
    sft_loss,
    unlikelihood_loss,
    uses_reference,
    uses_rejected_unlikelihood,
    validate_loss_options,
)
from dpo_jax.objectives.options import REWARD_LOSSES, LossOptions

__all__ = [
    "HiddenStates",
    "LOSS_NAMES",
    "LossOptions",
    "REWARD_LOSSES",
    "UNLIKELIHOOD_MIN_COMPLEMENT",
    "batch_loss",
    "dpo_loss",
    "hinge_loss",
    "ipo_loss",
    "make_loss_fn",
    "plackett_luce_loss",
    "preference_loss",
    "reference_logps",
    "reward_batch_loss",
    "robust_loss",
    "sequence_logps",
    "sequence_logps_from_hidden",
    "sft_loss",
    "token_logps",
    "token_unlikelihood",
    "unlikelihood_loss",
    "uses_reference",
    "uses_rejected_unlikelihood",
    "validate_loss_options",
]
