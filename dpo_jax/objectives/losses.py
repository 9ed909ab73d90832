"""The DPO objective family: one pure per-example loss function each, a registry by name, option
validation, and `preference_loss`, which turns per-response log-probs into a loss and its metrics.

Shapes: every loss sees `[B, K]` arrays, the K responses of a prompt ranked best first (K = 2: chosen,
rejected). The per-example functions take `scores`, the log-ratios log pi(y|x) - log pi_ref(y|x), or the
plain policy log-probs when there is no reference (`reference_free=True`, and `sft`), and return `[B]`.

Whether log pi(y|x) is a sum or a per-token mean over the response is decided upstream by
`sequence_logps(..., average=...)`, driven by the config option `length_normalize`. The paper and the
reference repo use sums for every loss; TRL length-normalises for IPO (as the IPO authors did). The
same switch applies to every loss here rather than being hard-wired to one of them.

Metrics are (sum, count) pairs over real rows (see `dpo_jax.metrics`). For K > 2, "rejected" metrics
are the mean over responses 1..K-1, and `rewards/accuracies` counts a row as correct when the best
response's implicit reward is strictly above every other response's; for K = 2 both reduce to the usual
pairwise definitions. "Strictly above" means by more than float32 rounding (`TIE_TOLERANCE`): at step 1
the policy equals the reference, but its log-probs come from the differentiated forward and the
reference's from a separate one (or a precomputed pass with another batch shape), which XLA may round
differently; a margin of a few ulps is a tie, not a win, as it is in TRL, whose two forwards agree bitwise.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from dpo_jax import UserError
from dpo_jax.metrics import masked_sum_count


def _pairwise_margin(scores):
    if scores.shape[-1] != 2:
        raise ValueError(f"a pairwise loss needs exactly 2 responses per prompt, got scores {scores.shape}")
    return scores[:, 0] - scores[:, 1]


def _clean_and_flipped_nll(u):
    """-log sig(u) (the label is right) and -log sig(-u) (the label is flipped)."""
    return -jax.nn.log_sigmoid(u), -jax.nn.log_sigmoid(-u)


def dpo_loss(scores, *, beta, label_smoothing=0.0):
    """Sigmoid DPO; with label smoothing eps, conservative DPO: -(1-eps) log sig(u) - eps log sig(-u)."""
    clean, flipped = _clean_and_flipped_nll(beta * _pairwise_margin(scores))
    return (1.0 - label_smoothing) * clean + label_smoothing * flipped


def robust_loss(scores, *, beta, label_smoothing=0.0):
    """Robust DPO (Chowdhury et al. 2024, as TRL defines it): an unbiased loss under label-flip rate eps."""
    clean, flipped = _clean_and_flipped_nll(beta * _pairwise_margin(scores))
    return ((1.0 - label_smoothing) * clean - label_smoothing * flipped) / (1.0 - 2.0 * label_smoothing)


def ipo_loss(scores, *, beta):
    """IPO: (log-ratio margin - 1/(2 beta))^2; beta plays the role of the paper's tau."""
    return (_pairwise_margin(scores) - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(scores, *, beta):
    """SLiC hinge: relu(1 - beta * log-ratio margin)."""
    return jax.nn.relu(1.0 - beta * _pairwise_margin(scores))


def plackett_luce_loss(scores, *, beta, top_k=0):
    """Negative Plackett-Luce log-likelihood of the ranking 0, 1, ..., K-1 under rewards beta * scores.

    Term k is log sig-like: s_k - logsumexp_{j>=k} s_j = -softplus(logsumexp_{j>k} (s_j - s_k)). Written
    with reward differences, K = 2 is literally the DPO expression -log sig(s_0 - s_1). The last term is
    identically 0 and is never formed (its logsumexp would run over an empty set). `top_k > 0` keeps only
    the first top_k terms: the likelihood that the top_k best responses come first, in order.
    """
    num_responses = scores.shape[-1]
    if num_responses < 2:
        raise ValueError(f"plackett_luce needs at least 2 responses per prompt, got scores {scores.shape}")
    num_terms = num_responses - 1 if top_k == 0 else min(top_k, num_responses - 1)
    # later_minus_current[b, k, j] = beta * (scores[b, j] - scores[b, k]), for the positions k that count.
    later_minus_current = beta * (scores[:, None, :] - scores[:, :num_terms, None])
    is_later = jnp.arange(num_responses)[None, :] > jnp.arange(num_terms)[:, None]
    later_minus_current = jnp.where(is_later, later_minus_current, -jnp.inf)
    terms = -jax.nn.softplus(jax.nn.logsumexp(later_minus_current, axis=-1))
    return -jnp.sum(terms, axis=-1)


def sft_loss(scores):
    """Maximum likelihood on the best response (preferred-FT): -log pi(y_0|x); no beta, no reference."""
    return -scores[:, 0]


def unlikelihood_loss(scores, rejected_unlikelihood, *, unlikelihood_alpha=1.0):
    """Unlikelihood (Welleck et al. 2019), the paper's baseline:
    -log pi(y_w|x) - alpha * sum_t log(1 - p(y_l,t)).

    `rejected_unlikelihood` [B] is the token-level term of the rejected response, computed from the
    logits by `token_unlikelihood`; `unlikelihood_alpha` weighs it (the knob the paper sweeps for its
    unlikelihood points; 0 is preferred-FT on the chosen response). No beta, no reference.
    """
    return -scores[:, 0] + unlikelihood_alpha * rejected_unlikelihood


@dataclasses.dataclass(frozen=True)
class _LossSpec:
    function: Callable
    is_preference: bool  # compares responses: K >= 2, a reference unless reference-free, rewards metrics
    is_pairwise: bool  # exactly K = 2
    option_names: tuple[str, ...]  # options the function takes beyond scores (and beta for preference losses)
    needs_rejected_unlikelihood: bool = False  # takes the rejected response's token-level unlikelihood term


_LOSSES = {
    "dpo": _LossSpec(dpo_loss, True, True, ("label_smoothing",)),
    "ipo": _LossSpec(ipo_loss, True, True, ()),
    "hinge": _LossSpec(hinge_loss, True, True, ()),
    "robust": _LossSpec(robust_loss, True, True, ("label_smoothing",)),
    "plackett_luce": _LossSpec(plackett_luce_loss, True, False, ("top_k",)),
    "sft": _LossSpec(sft_loss, False, False, ()),
    "unlikelihood": _LossSpec(
        unlikelihood_loss, False, True, ("unlikelihood_alpha",), needs_rejected_unlikelihood=True
    ),
}
LOSS_NAMES = tuple(_LOSSES)


def uses_reference(name, *, reference_free=False):
    """Whether loss `name` needs reference log-probs (so callers can skip the reference forward)."""
    return _LOSSES[name].is_preference and not reference_free


def uses_rejected_unlikelihood(name):
    """Whether loss `name` needs `token_unlikelihood` of its rejected response (token-level probs)."""
    return _LOSSES[name].needs_rejected_unlikelihood


def _is_real_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_loss_options(
    name,
    *,
    beta,
    label_smoothing=0.0,
    num_responses=2,
    top_k=0,
    reference_free=False,
    length_normalize=False,
    unlikelihood_alpha=1.0,
):
    """Raises ValueError, naming the field and its value, for any setting the loss cannot honour.

    Hyperparameters must be Python numbers (they are static config values). A setting the chosen loss
    would ignore is an error, not a no-op, so a typo'd experiment fails at start-up instead of silently
    running the wrong objective.
    """
    if name not in _LOSSES:
        raise UserError(f"loss_name={name!r} is not a known loss; known losses: {', '.join(LOSS_NAMES)}")
    spec = _LOSSES[name]
    if not _is_real_number(beta) or not beta > 0:
        raise UserError(f"beta={beta!r} must be a number > 0")
    if not _is_real_number(label_smoothing) or not 0.0 <= label_smoothing < 0.5:
        raise UserError(f"label_smoothing={label_smoothing!r} must lie in [0, 0.5)")
    if label_smoothing != 0 and "label_smoothing" not in spec.option_names:
        raise UserError(
            f"label_smoothing={label_smoothing!r} is ignored by loss {name!r}; "
            f"it is used only by {_losses_taking('label_smoothing')}"
        )
    if not isinstance(num_responses, int) or isinstance(num_responses, bool):
        raise UserError(f"num_responses={num_responses!r} must be an integer")
    if spec.is_pairwise and num_responses != 2:
        raise UserError(
            f"num_responses={num_responses} but loss {name!r} compares exactly 2 responses; "
            "use plackett_luce for rankings of more than 2"
        )
    minimum_responses = 2 if spec.is_preference else 1
    if num_responses < minimum_responses:
        raise UserError(f"num_responses={num_responses} but loss {name!r} needs >= {minimum_responses}")
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise UserError(f"top_k={top_k!r} must be an integer")
    if top_k != 0 and "top_k" not in spec.option_names:
        raise UserError(f"top_k={top_k} is ignored by loss {name!r}; only {_losses_taking('top_k')} uses it")
    if not 0 <= top_k <= num_responses:
        raise UserError(f"top_k={top_k} must lie in [0, num_responses={num_responses}] (0: whole ranking)")
    if not _is_real_number(unlikelihood_alpha) or not 0 <= unlikelihood_alpha < float("inf"):
        raise UserError(f"unlikelihood_alpha={unlikelihood_alpha!r} must be a finite number >= 0")
    if unlikelihood_alpha != 1.0 and "unlikelihood_alpha" not in spec.option_names:
        raise UserError(
            f"unlikelihood_alpha={unlikelihood_alpha!r} is ignored by loss {name!r}; "
            f"it is used only by {_losses_taking('unlikelihood_alpha')}"
        )
    for field, value in (("reference_free", reference_free), ("length_normalize", length_normalize)):
        if not isinstance(value, bool):
            raise UserError(f"{field}={value!r} must be a bool")


def _losses_taking(option):
    return ", ".join(name for name, spec in _LOSSES.items() if option in spec.option_names)


def _best_versus_others(values):
    """(value of response 0, mean value of responses 1..K-1) per row."""
    return values[:, 0], jnp.mean(values[:, 1:], axis=-1)


# Relative float32 rounding allowed in a sum of token log-probs computed two ways: 16 ulps of the
# magnitudes involved, hundreds of times the rounding of a sum of a few hundred tokens, and far below
# any margin that training produces.
TIE_TOLERANCE = 16 * float(jnp.finfo(jnp.float32).eps)


def _wins_beyond_rounding(scores, policy_logps, reference_logps):
    """[B] whether response 0's score beats every other response's by more than float32 rounding."""
    magnitude = jnp.abs(policy_logps)
    if reference_logps is not None:
        magnitude = magnitude + jnp.abs(reference_logps)
    tolerance = TIE_TOLERANCE * (magnitude[:, :1] + magnitude[:, 1:])
    return jnp.all(scores[:, :1] - scores[:, 1:] > tolerance, axis=-1)


def _preference_metrics(policy_logps, reference_logps, scores, beta, example_mask):
    rewards = beta * scores
    chosen_rewards, rejected_rewards = _best_versus_others(rewards)
    chosen_logps, rejected_logps = _best_versus_others(policy_logps)
    best_is_strictly_first = _wins_beyond_rounding(scores, policy_logps, reference_logps)
    per_row = {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": best_is_strictly_first.astype(jnp.float32),
        "logps/chosen": chosen_logps,
        "logps/rejected": rejected_logps,
    }
    return {name: masked_sum_count(values, example_mask) for name, values in per_row.items()}


def preference_loss(
    name, policy_logps, reference_logps, *, beta, example_mask=None, rejected_unlikelihood=None, **options
):
    """Loss `name` on `[B, K]` log-probs (responses ranked best first), and its (sum, count) metrics.

    Args:
      name: one of LOSS_NAMES.
      policy_logps: `[B, K]` log pi(y_k|x) (differentiable).
      reference_logps: `[B, K]` log pi_ref(y_k|x), treated as constant; may be None for `sft` or with
        `reference_free=True` (then ignored: the reference terms are dropped, i.e. taken as 0).
      beta: Python float > 0 (ignored by `sft`).
      example_mask: `[B]`, 1 for a real row and 0 for a padding row; None means all rows are real.
      rejected_unlikelihood: `[B]` -sum_t log(1 - p(y_l,t)) of the rejected response
        (`token_unlikelihood`, differentiable); required by `unlikelihood`, refused by every other loss.
      **options: `label_smoothing` (dpo, robust), `top_k` (plackett_luce), `unlikelihood_alpha`
        (unlikelihood), `reference_free`.

    Returns:
      `(loss, metrics)`: loss is the mean over real rows (0 when there are none); metrics maps a name to
      (sum over real rows, number of real rows), with `metrics["loss"][0] == loss * count`, differentiable.
      The other metrics carry no gradient. `sft` reports only `loss` and `logps/chosen`;
      `unlikelihood` reports those and `logps/rejected`.
    """
    policy_logps = jnp.asarray(policy_logps, dtype=jnp.float32)
    if policy_logps.ndim != 2:
        raise ValueError(f"policy_logps must be [B, K], got shape {policy_logps.shape}")
    validate_loss_options(name, beta=beta, num_responses=policy_logps.shape[1], **options)
    spec = _LOSSES[name]
    if example_mask is None:
        example_mask = jnp.ones(policy_logps.shape[:1], dtype=jnp.float32)

    if uses_reference(name, reference_free=options.get("reference_free", False)):
        if reference_logps is None:
            raise ValueError(f"loss {name!r} needs reference_logps unless reference_free=True")
        reference_logps = jax.lax.stop_gradient(jnp.asarray(reference_logps, dtype=jnp.float32))
        if reference_logps.shape != policy_logps.shape:
            raise ValueError(
                f"reference_logps shape {reference_logps.shape} != policy_logps shape {policy_logps.shape}"
            )
        scores = policy_logps - reference_logps
    else:
        scores, reference_logps = policy_logps, None

    if spec.needs_rejected_unlikelihood != (rejected_unlikelihood is not None):
        needed = "needs" if spec.needs_rejected_unlikelihood else "does not take"
        raise ValueError(f"loss {name!r} {needed} rejected_unlikelihood (the token-level unlikelihood term)")
    loss_options = {option: options[option] for option in spec.option_names if option in options}
    if spec.needs_rejected_unlikelihood:
        loss_options["rejected_unlikelihood"] = jnp.asarray(rejected_unlikelihood, dtype=jnp.float32)
    if spec.is_preference:
        per_row_loss = spec.function(scores, beta=beta, **loss_options)
        metrics = _preference_metrics(policy_logps, reference_logps, scores, beta, example_mask)
    else:
        per_row_loss = spec.function(scores, **loss_options)
        metrics = {"logps/chosen": masked_sum_count(policy_logps[:, 0], example_mask)}
        if spec.is_pairwise:
            metrics["logps/rejected"] = masked_sum_count(policy_logps[:, 1], example_mask)
    metrics = jax.lax.stop_gradient(metrics)
    loss_sum, count = masked_sum_count(per_row_loss, example_mask)
    metrics["loss"] = (loss_sum, count)
    return loss_sum / jnp.maximum(count, 1.0), metrics
