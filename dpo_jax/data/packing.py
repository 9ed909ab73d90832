"""Shared-prompt and packed rows: each example's prompt computed once, several examples per row.

An example (prompt x, responses y_1 .. y_K) becomes one stretch of a row:

    x[:-1] | x[-1] y_1 | x[-1] y_2 | ... | x[-1] y_K          (share_prompt)
    x y_1 | x y_2 | ... | x y_K                                 (share_prompt off)

The shared prefix x[:-1] is branch 0; response k is branch k + 1 and starts with a copy of the last
prompt token at that token's own position. Branch k + 1 attends to the prefix and to itself only
(`dpo_jax.objectives.rows.row_attention_mask`) and its positions continue the prefix's, so every token
sees exactly the context and positions it has in the unshared sequence x y_k, and the copied token
predicts y_k[0] as x[-1] does there: the next-token shift of `dpo_jax.objectives.logps` holds within
every branch unchanged. The copy costs K - 1 tokens per example instead of (K - 1) |x|.

Packing puts several such stretches in one row of fixed length (segment ids s + 1 for the example in
slot s of the row, 0 on padding); attention never crosses a segment. Placement is first-fit
decreasing over the examples of one global batch, a pure function of their lengths and order, so a
step's rows are as deterministic as its examples.

Row batch format (numpy, R rows of length L, S example slots per row, K responses):
  input_ids     int32 [R, L]     tokens, pad_id on padding
  position_ids  int32 [R, L]     position of each token in its unshared sequence x y_k
  segment_ids   int32 [R, L]     s + 1 for the example in slot s, 0 on padding
  branch_ids    int32 [R, L]     0 on the shared prefix and padding, k + 1 on response k's branch
  loss_mask     int32 [R, L]     1 on counted response tokens (the unshared convention)
  example_mask  int32 [R, S]     1 for a real example in the slot
  example_index int32 [R, S]     row of the example in its split, -1 for an empty slot
  response_lengths int32 [R, S, K]  tokens of each response (EOS included), 0 for an empty slot
  <extra>       [R, S, ...]      the attached per-example arrays, zeros for an empty slot
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dpo_jax.data.tokenization import TokenizedSplit

ROW_FIELDS = ("input_ids", "position_ids", "segment_ids", "branch_ids", "loss_mask")


def example_row_lengths(split: TokenizedSplit, share_prompt: bool) -> np.ndarray:
    """[N] tokens each example takes in a row."""
    prompts, responses = split.prompt_lengths(), split.response_lengths()
    k = split.num_responses
    if share_prompt:
        # K - 1 copies of the last prompt token; an empty prompt has nothing to share or copy.
        return prompts + responses.sum(axis=1) + np.where(prompts > 0, k - 1, 0)
    return k * prompts + responses.sum(axis=1)


def longest_possible_row(max_length: int, num_responses: int) -> int:
    """The most tokens one example's row can take when every sequence x y_k has at most `max_length`.

    K * max_length, shared prompt or not. Unshared: K |x| + sum |y_k| <= K L. Shared (`example_row_lengths`):
    |x| + sum |y_k| + K - 1 <= |x| + K (L - |x|) + K - 1 = K L - (K - 1)(|x| - 1) for |x| >= 1, reached at
    a 1-token prompt with every response L - 1 long; an empty prompt gives sum |y_k| <= K L.
    """
    return num_responses * max_length


def worst_case_row_shape(layout: RowLayout, *, max_length: int, num_responses: int, batch_size: int):
    """(row length, example slots per row) the loader can produce for any data within `max_length`.

    Without data to measure: unpacked rows are as long as the longest possible example row, one slot
    each; packed rows are `pack_length` (or that longest row when 0) with at most `batch_size` slots
    (`_RowBuilder` caps slots at the batch size and at row length over the shortest example, >= 1 token).
    """
    longest = longest_possible_row(max_length, num_responses)
    if not layout.pack:
        return longest, 1
    row_length = layout.pack_length or longest
    return row_length, max(1, min(batch_size, row_length))


@dataclasses.dataclass(frozen=True)
class RowLayout:
    """How the loader lays examples into rows (None in its place: today's padded [B, K, L] batches).

    share_prompt: the prompt once per example. pack: several examples per row of `pack_length` tokens
    (0 = the longest example row of the split). row_multiple: the row count of a packed step is rounded
    up to it with empty rows (pass the data-parallel size times the micro-batches per step).
    """

    share_prompt: bool = True
    pack: bool = False
    pack_length: int = 0
    row_multiple: int = 1

    def __post_init__(self):
        if self.pack_length < 0 or self.row_multiple < 1:
            raise ValueError(f"bad row layout {self}: pack_length >= 0 and row_multiple >= 1 are required")


def layout_from_config(data_config, *, row_multiple: int = 1) -> RowLayout | None:
    """The row layout `data.share_prompt` / `data.pack` / `data.pack_length` ask for (None: padded)."""
    share, pack = bool(data_config.share_prompt), bool(data_config.pack)
    if not (share or pack):
        return None
    return RowLayout(
        share_prompt=share, pack=pack, pack_length=int(data_config.pack_length), row_multiple=row_multiple
    )


def batch_layout(data_config, *, stage: str, row_multiple: int) -> RowLayout | None:
    """The batch layout a stage trains and evaluates on (None: padded [B, K, L]).

    The policy stages take the rows `data.share_prompt` / `data.pack` ask for. The reward model stays
    padded whatever `data.share_prompt` says: it scores a response at the last token of its own padded
    sequence, which rows do not provide per branch.
    """
    if stage == "reward_model":
        return None
    return layout_from_config(data_config, row_multiple=row_multiple)


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """Where each example of a global batch goes: `rows[r]` lists (position in the batch) per slot."""

    rows: list[list[int]]
    row_length: int
    slots: int


def plan_rows(
    lengths: np.ndarray, *, row_length: int, slots: int, pack: bool, row_multiple: int = 1
) -> RowPlan:
    """Assigns the examples of one global batch (their row lengths, in batch order) to rows.

    Without packing every example has its own row. With packing: first-fit decreasing (ties keep batch
    order), at most `slots` examples per row; the row count is rounded up to `row_multiple` with
    empty rows so it divides over processes, devices and micro-batches.
    """
    if int(lengths.max(initial=0)) > row_length:
        raise ValueError(
            f"an example takes {int(lengths.max())} tokens, more than the row length {row_length}"
        )
    if not pack:
        rows = [[i] for i in range(len(lengths))]
    else:
        rows, room = [], []
        for i in np.argsort(-lengths, kind="stable"):
            need = int(lengths[i])
            for r, free in enumerate(room):
                if free >= need and len(rows[r]) < slots:
                    rows[r].append(int(i))
                    room[r] -= need
                    break
            else:
                rows.append([int(i)])
                room.append(row_length - need)
    rows += [[] for _ in range(-len(rows) % row_multiple)]
    return RowPlan(rows=rows, row_length=row_length, slots=slots if pack else 1)


def _write_example(out: dict, row: int, offset: int, slot: int, prompt, responses, *, share_prompt, real):
    """Writes one example at `offset` of `row`; returns the offset after it."""
    prefix, head = (prompt[:-1], prompt[-1:]) if share_prompt and len(prompt) else (prompt[:0], prompt)
    n = len(prefix)
    stop = offset + n
    out["input_ids"][row, offset:stop] = prefix
    out["position_ids"][row, offset:stop] = np.arange(n)
    out["segment_ids"][row, offset:stop] = slot + 1
    for k, response in enumerate(responses):
        tokens = np.concatenate([head, response])
        start, stop = stop, stop + len(tokens)
        positions = n + np.arange(len(tokens))
        out["input_ids"][row, start:stop] = tokens
        out["position_ids"][row, start:stop] = positions
        out["segment_ids"][row, start:stop] = slot + 1
        out["branch_ids"][row, start:stop] = k + 1
        if real:
            # Response tokens count, except one at position 0: nothing predicts it (as unshared).
            counted = (np.arange(len(tokens)) >= len(head)) & (positions > 0)
            out["loss_mask"][row, start:stop] = counted
    return stop


def build_rows(
    split: TokenizedSplit,
    indices: np.ndarray,
    real: np.ndarray,
    plan: RowPlan,
    row_range: range,
    *,
    share_prompt: bool,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """The rows `row_range` of a planned global batch (`indices[i]`: split row of batch example i)."""
    num_rows, k = len(row_range), split.num_responses
    out = {name: np.zeros((num_rows, plan.row_length), np.int32) for name in ROW_FIELDS}
    out["input_ids"][:] = pad_id
    out["example_mask"] = np.zeros((num_rows, plan.slots), np.int32)
    out["example_index"] = np.full((num_rows, plan.slots), -1, np.int32)
    out["response_lengths"] = np.zeros((num_rows, plan.slots, k), np.int32)
    extras = {
        name: np.zeros((num_rows, plan.slots, *array.shape[1:]), array.dtype)
        for name, array in split.extras.items()
    }
    for local, r in enumerate(row_range):
        offset = 0
        for slot, i in enumerate(plan.rows[r]):
            index = int(indices[i])
            responses = [split.response(index, j) for j in range(k)]
            offset = _write_example(
                out,
                local,
                offset,
                slot,
                split.prompt(index),
                responses,
                share_prompt=share_prompt,
                real=real[i],
            )
            out["example_mask"][local, slot] = int(real[i])
            out["example_index"][local, slot] = index
            out["response_lengths"][local, slot] = [len(response) for response in responses]
            for name, array in extras.items():
                array[local, slot] = split.extras[name][index]
    out.update(extras)
    return out
