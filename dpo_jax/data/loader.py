"""Step-indexed batches: the batch for global step s is a pure function of (data, seed, batch size, s).

Training: epoch e = s // steps_per_epoch is a permutation of the examples that depends only on
(seed, e, N); step s takes the next `global_batch_size` rows of it; the remainder of an epoch is
dropped. The global batch does not depend on the number of processes: process p of P materialises the
contiguous rows [p * G/P, (p + 1) * G/P) of it, so the P local batches concatenate to the 1-process batch.
Resuming is O(1) and exact: `position(s)` is a small JSON dict saved with a checkpoint, and
`check_position(saved)` refuses a position taken on other data, another seed or another batch size.

Evaluation: every eval example exactly once, in order, the last global batch filled with filler rows
(a copy of example 0 with loss_mask and example_mask 0, so no row is ever fully masked).

Batch format (numpy, per process, B = local batch, K = responses per example, L = sequence length):
  input_ids      int32 [B, K, L]  prompt tokens then response tokens, right-padded with pad_id
  attention_mask int32 [B, K, L]  1 on prompt and response tokens
  loss_mask      int32 [B, K, L]  1 where input_ids[t] is a response token (its EOS included), else 0
  example_mask   int32 [B]        1 for a real example, 0 for an eval filler row
  example_index  int32 [B]        eval batches only: the example's row in its split, -1 for filler
  <extra>        [B, ...]         the rows of each array attached with `TokenizedSplit.with_extras`
The masks come from the stored lengths, never from input_ids != pad_id (pad == eos in GPT-2/Pythia).
L is max_length: every step has one shape, compiled once. Padding to shorter lengths is the rows'
job (below: a shared prompt, several examples per row), not length buckets.

Rows (`layout=RowLayout(...)`, from `data.share_prompt` / `data.pack`): the same examples per step, laid
out by `dpo_jax.data.packing` (its docstring has the format): the prompt once per example, several
examples per row. The global rows are planned from the whole global batch and process p takes the
p-th contiguous block of them; eval rows hold real examples only (empty slots, no filler copies).
The layout does not enter the data position: resuming onto another layout continues the same examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dpo_jax import UserError
from dpo_jax.data.packing import RowLayout, build_rows, example_row_lengths, plan_rows
from dpo_jax.data.prepare import PreparedData
from dpo_jax.data.tokenization import TokenizedSplit

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A fixed integer hash (SplitMix64 finaliser); uint64 arithmetic wraps by design."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """A shuffle that depends only on its arguments, not on numpy's generator implementation.

    Hand-rolled so that a checkpoint resumes onto the same order after a numpy upgrade.
    """
    with np.errstate(over="ignore"):
        stream = _splitmix64(np.asarray([(seed & 0xFFFFFFFF) << 32 | (epoch & 0xFFFFFFFF)], dtype=np.uint64))
        keys = _splitmix64(np.arange(num_examples, dtype=np.uint64) ^ stream)
    return np.argsort(keys, kind="stable")


def _validate_processes(global_batch_size: int, process_index: int, process_count: int) -> int:
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}"
        )
    return global_batch_size // process_count


class _BatchBuilder:
    """Pads selected examples of a split into the batch format, [B, K, max_length]."""

    def __init__(self, split: TokenizedSplit, *, pad_id: int, max_length: int):
        self.split = split
        self.pad_id = pad_id
        self.max_length = max_length
        self._sequence_lengths = split.sequence_lengths()
        longest = int(self._sequence_lengths.max(initial=0))
        if longest > max_length:
            raise ValueError(
                f"tokenised data holds a {longest}-token sequence, longer than max_length={max_length}"
            )

    def batch(self, rows: np.ndarray, real: np.ndarray, process_index: int, process_count: int):
        """This process's share of the global batch of `rows` (its contiguous block of them)."""
        local = slice(
            process_index * len(rows) // process_count, (process_index + 1) * len(rows) // process_count
        )
        return self.build(rows[local], seq_len=self.max_length, real=real[local])

    def real_tokens(self, rows: np.ndarray) -> int:
        return int(self._sequence_lengths[rows].sum())

    def build(self, rows: np.ndarray, *, seq_len: int, real: np.ndarray) -> dict[str, np.ndarray]:
        num_responses = self.split.num_responses
        shape = (len(rows), num_responses, seq_len)
        input_ids = np.full(shape, self.pad_id, dtype=np.int32)
        attention_mask = np.zeros(shape, dtype=np.int32)
        loss_mask = np.zeros(shape, dtype=np.int32)
        for b, index in enumerate(rows):
            prompt = self.split.prompt(index)
            for k in range(num_responses):
                response = self.split.response(index, k)
                end = len(prompt) + len(response)
                input_ids[b, k, : len(prompt)] = prompt
                input_ids[b, k, len(prompt) : end] = response
                attention_mask[b, k, :end] = 1
                if real[b]:
                    loss_mask[b, k, len(prompt) : end] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "loss_mask": loss_mask,
            "example_mask": real.astype(np.int32),
        }
        batch.update({name: array[rows] for name, array in self.split.extras.items()})
        return batch


class _RowBuilder:
    """Lays the examples of a global batch into shared-prompt / packed rows (`dpo_jax.data.packing`).

    Every shape is fixed per split except a packed step's row count: rows are `pack_length` (or the
    longest example row) long, and unpacked steps have one row per example slot of the global batch.
    """

    def __init__(self, split, *, pad_id, max_length, layout: RowLayout, batch_size: int):
        self.split, self.pad_id, self.layout = split, pad_id, layout
        longest_sequence = int(split.sequence_lengths().max(initial=0))
        if longest_sequence > max_length:
            raise ValueError(
                f"tokenised data holds a {longest_sequence}-token sequence, longer than max_length={max_length}"
            )
        self._lengths = example_row_lengths(split, layout.share_prompt)
        longest = max(1, int(self._lengths.max(initial=1)))
        if layout.pack:
            if layout.pack_length and layout.pack_length < longest:
                raise ValueError(
                    f"data.pack_length={layout.pack_length} is shorter than the longest example row "
                    f"({longest} tokens): no row could hold it"
                )
            self.row_length = layout.pack_length or longest
            shortest = max(1, int(self._lengths.min(initial=1)))
            self.slots = max(1, min(batch_size, self.row_length // shortest))
        else:
            self.row_length = longest
            self.slots = 1

    def real_tokens(self, rows: np.ndarray) -> int:
        return int(self._lengths[rows].sum())

    def batch(self, rows: np.ndarray, real: np.ndarray, process_index: int, process_count: int):
        """This process's block of the rows holding the real examples among `rows`."""
        rows, lengths = rows[real], self._lengths[rows[real]]
        multiple = np.lcm(self.layout.row_multiple, process_count) if self.layout.pack else process_count
        plan = plan_rows(
            lengths,
            row_length=self.row_length,
            slots=self.slots,
            pack=self.layout.pack,
            row_multiple=multiple,
        )
        if not self.layout.pack:  # one row per slot of the global batch, real or not: one shape
            plan.rows.extend([] for _ in range(len(real) - len(plan.rows)))
        per_process = len(plan.rows) // process_count
        block = range(process_index * per_process, (process_index + 1) * per_process)
        return build_rows(
            self.split,
            rows,
            np.ones(len(rows), bool),
            plan,
            block,
            share_prompt=self.layout.share_prompt,
            pad_id=self.pad_id,
        )


def _builder(split, pad_id, max_length, layout, batch_size):
    """Padded [B, K, L] batches without a layout, rows (`dpo_jax.data.packing`) with one."""
    if layout is None:
        return _BatchBuilder(split, pad_id=pad_id, max_length=max_length)
    return _RowBuilder(split, pad_id=pad_id, max_length=max_length, layout=layout, batch_size=batch_size)


class TrainLoader:
    """Training batches by global step; see the module docstring for the contract."""

    def __init__(
        self,
        split: TokenizedSplit,
        *,
        global_batch_size: int,
        seed: int,
        process_index: int,
        process_count: int,
        pad_id: int,
        max_length: int,
        fingerprint: str,
        layout: RowLayout | None = None,
    ):
        self.local_batch_size = _validate_processes(global_batch_size, process_index, process_count)
        if split.num_examples < global_batch_size:
            raise ValueError(
                f"the training set has {split.num_examples} examples, fewer than one "
                f"global batch of {global_batch_size}"
            )
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self.fingerprint = fingerprint
        self.num_examples = split.num_examples
        self.steps_per_epoch = split.num_examples // global_batch_size
        self._builder = _builder(split, pad_id, max_length, layout, global_batch_size)
        self.layout = layout
        self._max_length = max_length
        self._permutation_epoch = -1
        self._permutation = np.zeros((0,), np.int64)

    def with_data(self, prepared: PreparedData) -> TrainLoader:
        """The same loader over `prepared.train`: the same examples, typically with extras attached."""
        if prepared.fingerprint != self.fingerprint or prepared.train.num_examples != self.num_examples:
            raise ValueError("with_data needs the same training data (fingerprint and size) as the loader's")
        return TrainLoader(
            prepared.train,
            global_batch_size=self.global_batch_size,
            seed=self.seed,
            process_index=self.process_index,
            process_count=self.process_count,
            pad_id=self._builder.pad_id,
            max_length=self._max_length,
            fingerprint=self.fingerprint,
            layout=self.layout,
        )

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def global_rows(self, step: int) -> np.ndarray:
        """Indices (into the tokenised split) of the global batch of `step`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._permutation_epoch:
            self._permutation = epoch_permutation(self.num_examples, self.seed, epoch)
            self._permutation_epoch = epoch
        start = within * self.global_batch_size
        return self._permutation[start : start + self.global_batch_size]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's slice of the global batch of `step`."""
        rows = self.global_rows(step)
        return self._builder.batch(rows, np.ones(len(rows), bool), self.process_index, self.process_count)

    def real_tokens(self, step: int) -> int:
        """Tokens of the global batch of `step` that the model computes, padding excluded (a shared
        prompt counts once; a padded batch counts the prompt once per response)."""
        return self._builder.real_tokens(self.global_rows(step))

    def iterate(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1

    def position(self, step: int) -> dict[str, Any]:
        """The data position before global step `step` is drawn: save it with the step's checkpoint."""
        epoch, within = divmod(step, self.steps_per_epoch)
        return {
            "step": int(step),
            "epoch": int(epoch),
            "step_in_epoch": int(within),
            "seed": int(self.seed),
            "global_batch_size": int(self.global_batch_size),
            "num_examples": int(self.num_examples),
            "dataset_fingerprint": self.fingerprint,
        }

    def check_position(self, position: dict[str, Any]) -> int:
        """Validates a saved position against this loader and returns the step to resume at."""
        if not isinstance(position, dict) or not isinstance(position.get("step"), int):
            raise ValueError(f"a data position is a dict with an integer 'step', got {position!r}")
        expected = self.position(position["step"])
        for field in ("dataset_fingerprint", "num_examples", "seed", "global_batch_size"):
            if position.get(field) != expected[field]:
                what = (
                    "different data"
                    if field in ("dataset_fingerprint", "num_examples")
                    else "a different setup"
                )
                raise ValueError(
                    f"cannot resume: the saved data position has {field}={position.get(field)!r} but this run "
                    f"has {expected[field]!r} (resuming on {what} would not continue the same example order)"
                )
        return expected["step"]


class EvalBatches:
    """Every eval example once, in order; re-iterable, `len()` is the number of global batches."""

    def __init__(
        self,
        split: TokenizedSplit,
        *,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        pad_id: int,
        max_length: int,
        layout: RowLayout | None = None,
    ):
        self.local_batch_size = _validate_processes(global_batch_size, process_index, process_count)
        if split.num_examples == 0:
            raise ValueError("the eval set is empty")
        self.global_batch_size = global_batch_size
        self.process_index = process_index
        self.process_count = process_count
        self.num_examples = split.num_examples
        self._builder = _builder(split, pad_id, max_length, layout, global_batch_size)

    def __len__(self) -> int:
        return -(-self.num_examples // self.global_batch_size)

    def batch(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"eval batch {index} out of range [0, {len(self)})")
        slots = np.arange(index * self.global_batch_size, (index + 1) * self.global_batch_size)
        real = slots < self.num_examples
        rows = np.where(real, slots, 0)
        batch = self._builder.batch(rows, real, self.process_index, self.process_count)
        if "example_index" not in batch:  # packed layouts say it per slot themselves
            # Where each row's results belong: on a multi-host mesh a process's rows need not be
            # contiguous in the global batch, so passes that collect per-example results go by this.
            start = self.process_index * self.local_batch_size
            local = slice(start, start + self.local_batch_size)
            batch["example_index"] = np.where(real, slots, -1)[local].astype(np.int32)
        return batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for index in range(len(self)):
            yield self.batch(index)


def make_train_loader(
    prepared: PreparedData,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    layout: RowLayout | None = None,
) -> TrainLoader:
    report = prepared.train_report
    if prepared.train.num_examples < global_batch_size:
        raise UserError(
            f"the {report.split} split ({report.origin or prepared.source}) has {prepared.train.num_examples} "
            f"usable examples ({report.rows_read} rows read), fewer than one global batch of "
            f"{global_batch_size}: lower config.global_batch_size or add examples"
        )
    return TrainLoader(
        prepared.train,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        pad_id=prepared.pad_id,
        max_length=prepared.max_length,
        fingerprint=prepared.fingerprint,
        layout=layout,
    )


def make_eval_batches(
    prepared: PreparedData,
    *,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    split: str = "eval",
    layout: RowLayout | None = None,
) -> EvalBatches:
    """Every example of the eval split (or, with split="train", of the train split, e.g. to precompute
    reference log-probs) exactly once, in order, the last batch padded with example_mask=0 rows."""
    if split not in ("eval", "train"):
        raise ValueError(f"split must be 'eval' or 'train', got {split!r}")
    data = prepared.train if split == "train" else prepared.eval
    if data is None:
        raise ValueError("this data has no eval split (data.eval_split is empty)")
    return EvalBatches(
        data,
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
        pad_id=prepared.pad_id,
        max_length=prepared.max_length,
        layout=layout,
    )
