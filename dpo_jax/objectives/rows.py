"""The model side of shared-prompt / packed rows (`dpo_jax.data.packing` builds them).

Two pieces: the attention mask the layout implies (a `RowMask`: segment and branch ids, which the
attention kernels take as they are and XLA expands to [R, L, L]), and the reduction of token-level values
(log-probs, unlikelihood terms) to one value per (example slot, response). The next-token shift is the
one of `dpo_jax.objectives.logps`: the value at position t belongs to the token at t + 1, so the token
ids that say where a value goes are shifted the same way.
"""

import jax
import jax.numpy as jnp

from dpo_jax.models.attention import RowMask
from dpo_jax.objectives.logps import next_token_targets


def row_attention_mask(batch) -> RowMask:
    """Query i may see key j of its own example if j is on the shared prefix or on i's own branch
    (causality is applied by the attention on top); `.pairwise()` is the `[R, L, L]` array."""
    _, _, num_responses = row_responses(batch)
    return RowMask(batch["segment_ids"], batch["branch_ids"], num_branches=num_responses)


def row_responses(batch) -> tuple[int, int, int]:
    """(rows, example slots per row, responses per example) of a row batch."""
    return batch["response_lengths"].shape


def sum_per_response(token_values, batch):
    """`[R, L]` values at next-token positions -> `([R, S, K] sums, [R, S, K] counted tokens)`.

    A per-row scatter (vmapped `segment_sum`) keeps the reduction local to each row, so it shards with
    the rows and splits with them into micro-batches.
    """
    _, slots, k = row_responses(batch)
    segments, branches = batch["segment_ids"], batch["branch_ids"]
    trash = slots * k
    token_slots = jnp.where((segments > 0) & (branches > 0), (segments - 1) * k + branches - 1, trash)
    target_slots, counted = next_token_targets(token_slots, batch["loss_mask"])
    target_slots = jnp.where(counted, target_slots, trash)

    def per_row(values, ids):
        return jax.ops.segment_sum(values, ids, num_segments=trash + 1)[:trash]

    # A select, not a product: positions that do not count may hold -inf.
    sums = jax.vmap(per_row)(jnp.where(counted, token_values, 0.0), target_slots)
    counts = jax.vmap(per_row)(counted.astype(jnp.float32), target_slots)
    shape = (segments.shape[0], slots, k)
    return sums.reshape(shape), counts.reshape(shape)
