"""The function the train step differentiates: a batch of ranked responses in, (loss sum, metrics) out.

Batch format (numpy or jax arrays), B prompts with K responses each, right padded to length L:
  input_ids       int32 [B, K, L]   prompt + response tokens
  attention_mask  int32 [B, K, L]
  loss_mask       int32 [B, K, L]   1 on response tokens whose log-prob counts (see `sequence_logps`)
  example_mask    int32 [B]         1 for a real prompt, 0 for a padding row
  reference_logps float32 [B, K]    optional, precomputed by `reference_logps` with the same
                                    `length_normalize`
SFT batches have the same layout with K = 1.

Row batches (`dpo_jax.data.packing`: the prompt computed once per example, several examples per row)
hold `[R, L]` token arrays with segment, branch and position ids and `[R, S, ...]` example arrays
(example_mask, reference_logps); every per-example result then has shape `[R, S, K]`, and the losses
see the `R * S` slots as one list (empty slots have example_mask 0).

`apply_fn(params, input_ids [N, L], attention_mask [N, L], position_ids=None)` is the model; row batches
pass their attention as a `dpo_jax.models.attention.RowMask` (segment and branch ids) and explicit
positions. It returns logits [N, L, V], or `HiddenStates`
(final hidden states and the output projection), which the log-probs then project onto the vocabulary
at the response positions only (`dpo_jax.objectives.logps.token_logps`). All K
responses go through one forward pass as a `[B * K, L]` batch, as the reference repo concatenates chosen
and rejected: one larger matmul instead of K smaller ones, and one set of weights gathered under FSDP.

The `unlikelihood` loss also needs token-level probabilities of the rejected response; they come from
the same forward (`token_unlikelihood`), and the per-token log-probs are computed once for both terms.
"""

from typing import Any

import jax
import jax.numpy as jnp

from dpo_jax.data.packing import RowLayout, layout_from_config
from dpo_jax.models.reward import sequence_scores
from dpo_jax.objectives.logps import _next_token_targets, _reduce_over_sequence, _token_logps, token_logps
from dpo_jax.objectives.losses import preference_loss, uses_reference, uses_rejected_unlikelihood
from dpo_jax.objectives.rows import row_attention_mask, sum_per_response

# 1 - p is clipped here before the log (as Welleck et al. do): a rejected token the model already
# predicts with p > 1 - 1e-5 contributes at most -log(1e-5) ~ 11.5 and no gradient, instead of an
# unbounded term whose gradient p / (1 - p) explodes, and float32 rounding of p to 1 cannot give inf.
UNLIKELIHOOD_MIN_COMPLEMENT = 1e-5


def _unlikelihood_terms(token_logps):
    return -jnp.log(jnp.maximum(-jnp.expm1(token_logps), UNLIKELIHOOD_MIN_COMPLEMENT))


def token_unlikelihood(logits, input_ids, loss_mask, *, average=False):
    """Per-sequence unlikelihood term -sum_t log(max(1 - p(y_t | y_<t), 1e-5)) over the counted tokens.

    Same conventions as `sequence_logps` (the mask marks counted tokens, the shift happens here);
    `average=True` takes the mean over counted tokens instead of the sum. Returns `[N]` float32.
    """
    targets, counted = _next_token_targets(input_ids, loss_mask)
    return _reduce_over_sequence(_unlikelihood_terms(_token_logps(logits, targets)), counted, average)[0]


def is_row_batch(batch) -> bool:
    """Shared-prompt / packed rows (`dpo_jax.data.packing`) rather than [B, K, L] padded sequences."""
    return "segment_ids" in batch


def _response_terms(params, batch, apply_fn, length_normalize, with_rejected_unlikelihood):
    """Log-probs of every response from one forward, shaped like the batch's examples ([B, K], or
    [R, S, K] for a row batch), and the unlikelihood term of response 1 (None unless asked for)."""
    if is_row_batch(batch):
        input_ids, loss_mask = batch["input_ids"], batch["loss_mask"]
        mask = row_attention_mask(batch)
        outputs = apply_fn(params, input_ids, mask, batch["position_ids"])

        def reduce(token_values, counted):
            del counted  # sum_per_response shifts the mask itself, with the slot ids
            sums, counts = sum_per_response(token_values, batch)
            return sums / jnp.maximum(counts, 1.0) if length_normalize else sums

    else:
        num_prompts, num_responses, length = batch["input_ids"].shape
        input_ids = batch["input_ids"].reshape(num_prompts * num_responses, length)
        loss_mask = batch["loss_mask"].reshape(num_prompts * num_responses, length)
        outputs = apply_fn(params, input_ids, batch["attention_mask"].reshape(input_ids.shape))

        def reduce(token_values, counted):
            values = _reduce_over_sequence(token_values, counted, length_normalize)[0]
            return values.reshape(num_prompts, num_responses)

    targets, counted = _next_token_targets(input_ids, loss_mask)
    response_token_logps = token_logps(outputs, targets, counted)
    logps = reduce(response_token_logps, counted)
    if not with_rejected_unlikelihood:
        return logps, None
    return logps, reduce(_unlikelihood_terms(response_token_logps), counted)[..., 1]


def _response_logps(params, batch, apply_fn, length_normalize):
    return _response_terms(params, batch, apply_fn, length_normalize, False)[0]


def reference_logps(reference_params, batch, *, apply_fn, length_normalize=False):
    """`[B, K]` (row batches: `[R, S, K]`) reference log-probs, constant for autodiff; precomputes `batch["reference_logps"]`."""
    frozen_params = jax.lax.stop_gradient(reference_params)
    return jax.lax.stop_gradient(_response_logps(frozen_params, batch, apply_fn, length_normalize))


def batch_loss(
    params, reference_params, batch, *, apply_fn, loss_name, beta, length_normalize=False, **options
):
    """Sum of the per-prompt losses over real prompts, and the (sum, count) metrics of `preference_loss`.

    Returning the sum (not the mean) lets the caller add sums across accumulation steps, devices and
    hosts and divide once by the total count of real prompts, which averages exactly.

    The reference comes from `batch["reference_logps"]` when present (then `reference_params` may be
    None), otherwise from one forward of `reference_params` under stop_gradient. Losses that need no
    reference (`sft`, `unlikelihood`, `reference_free=True`) run no reference forward at all.
    `unlikelihood` also takes the token-level term of response 1 (K = 2) from the policy forward; with
    `length_normalize` both of its terms are per-token means.

    Args:
      params: policy parameters (differentiated).
      reference_params: reference parameters, or None.
      batch: see the module docstring.
      apply_fn: `(params, input_ids, attention_mask) -> logits`.
      loss_name, beta, **options: as in `preference_loss`.
      length_normalize: per-token mean log-probs instead of sums (`sequence_logps(average=...)`).

    Returns:
      `(loss_sum, metrics)` with `loss_sum == metrics["loss"][0]`.
    """
    policy_logps, rejected_unlikelihood = _response_terms(
        params, batch, apply_fn, length_normalize, uses_rejected_unlikelihood(loss_name)
    )
    reference = None
    if uses_reference(loss_name, reference_free=options.get("reference_free", False)):
        if "reference_logps" in batch:
            reference = batch["reference_logps"]
        elif reference_params is not None:
            reference = reference_logps(
                reference_params, batch, apply_fn=apply_fn, length_normalize=length_normalize
            )
        else:
            raise ValueError(
                f"loss {loss_name!r} needs a reference: pass reference_params or batch['reference_logps']"
            )
    # Row batches carry examples as [R, S, ...]; the losses take one flat list of examples.
    num_responses = policy_logps.shape[-1]
    example_mask = batch.get("example_mask")
    _, metrics = preference_loss(
        loss_name,
        policy_logps.reshape(-1, num_responses),
        None if reference is None else reference.reshape(-1, num_responses),
        beta=beta,
        example_mask=None if example_mask is None else example_mask.reshape(-1),
        rejected_unlikelihood=None if rejected_unlikelihood is None else rejected_unlikelihood.reshape(-1),
        **options,
    )
    return metrics["loss"][0], metrics


# The reward model's losses by config name -> the reference-free preference loss they are on scores.
REWARD_LOSSES = {"bradley_terry": "dpo", "plackett_luce": "plackett_luce"}


def reward_batch_loss(params, batch, *, score_fn, loss_name, **options):
    """A reward model's loss on a batch of ranked responses: Bradley-Terry (or Plackett-Luce) on its scores.

    `score_fn(params, input_ids [N, L], attention_mask [N, L]) -> values [N, L]` is the scalar-head model;
    a response's reward is the value at its last real token (`models.reward.sequence_scores`). The loss
    is the reference-free preference loss of `REWARD_LOSSES[loss_name]` with beta = 1 on the rewards
    (Bradley-Terry: -log sigmoid(r_w - r_l)), so `rewards/*` metrics are the model's rewards and
    `rewards/accuracies` its pairwise (ranking) accuracy. Returns `(loss_sum, metrics)` like `batch_loss`.
    """
    num_prompts, num_responses, length = batch["input_ids"].shape
    input_ids = batch["input_ids"].reshape(num_prompts * num_responses, length)
    attention_mask = batch["attention_mask"].reshape(num_prompts * num_responses, length)
    scores = sequence_scores(score_fn(params, input_ids, attention_mask), attention_mask)
    _, metrics = preference_loss(
        REWARD_LOSSES[loss_name],
        scores.reshape(num_prompts, num_responses),
        None,
        beta=1.0,
        example_mask=batch.get("example_mask"),
        reference_free=True,
        **options,
    )
    # With no reference, logps/* would repeat the rewards under a misleading name.
    metrics = {name: value for name, value in metrics.items() if not name.startswith("logps/")}
    return metrics["loss"][0], metrics


def make_loss_fn(apply_fn, config):
    """`loss_fn(params, reference_params, batch) -> (loss_sum, metrics)` of the config's stage: the
    policy objectives (`batch_loss`) or, for `stage="reward_model"`, `reward_batch_loss`."""
    if config.stage == "reward_model":
        options = {"loss_name": config.loss}
        if config.loss == "bradley_terry":
            options["label_smoothing"] = config.label_smoothing
        if config.loss == "plackett_luce" and config.plackett_luce_top_k:
            options["top_k"] = config.plackett_luce_top_k

        def reward_loss_fn(params, reference_params, batch):
            del reference_params
            return reward_batch_loss(params, batch, score_fn=apply_fn, **options)

        return reward_loss_fn
    options = loss_options(config)

    def policy_loss_fn(params, reference_params, batch):
        return batch_loss(params, reference_params, batch, apply_fn=apply_fn, **options)

    return policy_loss_fn


def batch_layout(config, *, row_multiple: int) -> RowLayout | None:
    """The batch layout the stage's objective takes (None: padded [B, K, L]), for training and its passes.

    The policy objectives take the rows `data.share_prompt` / `data.pack` ask for. The reward model stays
    padded whatever `data.share_prompt` says: `reward_batch_loss` scores a response at the last token of
    its own padded sequence, which rows do not provide per branch.
    """
    if config.stage == "reward_model":
        return None
    return layout_from_config(config.data, row_multiple=row_multiple)


def loss_options(config) -> dict[str, Any]:
    """The objective's settings from the config, as `batch_loss` takes them."""
    options = dict(loss_name=config.loss, beta=config.beta, length_normalize=config.length_normalize)
    if config.loss in ("dpo", "robust"):
        options["label_smoothing"] = config.label_smoothing
    if config.loss != "sft":
        options["reference_free"] = config.reference_free
    if config.loss == "plackett_luce" and config.plackett_luce_top_k:
        options["top_k"] = config.plackett_luce_top_k
    if config.loss == "unlikelihood":
        options["unlikelihood_alpha"] = config.unlikelihood_alpha
    return options
