"""The function the train step differentiates: a batch of ranked responses in, (loss sum, metrics) out.

Batch format (numpy or jax arrays), B prompts with K responses each, right padded to length L:
  input_ids       int32 [B, K, L]   prompt + response tokens
  attention_mask  int32 [B, K, L]
  loss_mask       int32 [B, K, L]   1 on response tokens whose log-prob counts (see `sequence_logps`)
  example_mask    int32 [B]         1 for a real prompt, 0 for a padding row
  reference_logps float32 [B, K]    optional, precomputed by `reference_logps` with the same
                                    `length_normalize`
SFT batches have the same layout with K = 1.

`apply_fn(params, input_ids [N, L], attention_mask [N, L]) -> logits [N, L, V]` is the model. All K
responses go through one forward pass as a `[B * K, L]` batch, as the reference repo concatenates chosen
and rejected: one larger matmul instead of K smaller ones, and one set of weights gathered under FSDP.
"""

import jax

from dpo_jax.objectives.logps import sequence_logps
from dpo_jax.objectives.losses import preference_loss, uses_reference


def _response_logps(params, batch, apply_fn, length_normalize):
    """`[B, K]` log-probs of every response, from a single forward of all B * K sequences."""
    num_prompts, num_responses, length = batch["input_ids"].shape

    def flatten(name):
        return batch[name].reshape(num_prompts * num_responses, length)

    logits = apply_fn(params, flatten("input_ids"), flatten("attention_mask"))
    logps, _ = sequence_logps(logits, flatten("input_ids"), flatten("loss_mask"), average=length_normalize)
    return logps.reshape(num_prompts, num_responses)


def reference_logps(reference_params, batch, *, apply_fn, length_normalize=False):
    """`[B, K]` reference log-probs, constant for autodiff; precomputes `batch["reference_logps"]`."""
    frozen_params = jax.lax.stop_gradient(reference_params)
    return jax.lax.stop_gradient(_response_logps(frozen_params, batch, apply_fn, length_normalize))


def batch_loss(
    params, reference_params, batch, *, apply_fn, loss_name, beta, length_normalize=False, **loss_options
):
    """Sum of the per-prompt losses over real prompts, and the (sum, count) metrics of `preference_loss`.

    Returning the sum (not the mean) lets the caller add sums across accumulation steps, devices and
    hosts and divide once by the total count of real prompts, which averages exactly.

    The reference comes from `batch["reference_logps"]` when present (then `reference_params` may be
    None), otherwise from one forward of `reference_params` under stop_gradient. Losses that need no
    reference (`sft`, `reference_free=True`) run no reference forward at all.

    Args:
      params: policy parameters (differentiated).
      reference_params: reference parameters, or None.
      batch: see the module docstring.
      apply_fn: `(params, input_ids, attention_mask) -> logits`.
      loss_name, beta, **loss_options: as in `preference_loss`.
      length_normalize: per-token mean log-probs instead of sums (`sequence_logps(average=...)`).

    Returns:
      `(loss_sum, metrics)` with `loss_sum == metrics["loss"][0]`.
    """
    policy_logps = _response_logps(params, batch, apply_fn, length_normalize)
    reference = None
    if uses_reference(loss_name, reference_free=loss_options.get("reference_free", False)):
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
    _, metrics = preference_loss(
        loss_name,
        policy_logps,
        reference,
        beta=beta,
        example_mask=batch.get("example_mask"),
        **loss_options,
    )
    return metrics["loss"][0], metrics
