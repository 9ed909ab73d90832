"""Host-only judges on several processes: process 0 asks, every process gets the answer.

On a multi-host run every process executes the evaluation command in lockstep (the sampler and the
Flax scorers are collective programs). A judge that runs on the host (the OpenAI-compatible API judge,
a torch classifier) must not be asked once per process: that multiplies API calls and cost, and
appends every reply to one cache file several times. So process 0 alone asks it, and its answers are
broadcast (one small collective) to the others, which need them: the win-rate summary decides whether
a sweep stops (`IncompleteJudging`) before the next temperature's sampling, Best-of-N picks the texts
the next scoring pass reads, and every process must take the same branch or the collectives hang.
A judge that fails on process 0 fails on every process, at the same point.

The others receive the choices (A, B, tie, unreadable, error) but not the replies' text: they write
nothing, so the reasons and raw replies live only where the result files are written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np

from dpo_jax.judges.base import TIE, A, B, Comparison, Judge, JudgeError, Verdict

# A verdict crosses processes as one int32: its choice, or "no readable choice" / "no answer".
_CHOICES = (A, B, TIE, None)
_ERROR = len(_CHOICES)


def _broadcast(value: np.ndarray) -> np.ndarray:
    """Process 0's `value` on every process, bit for bit (as 32-bit words: float64 survives x64 off)."""
    from jax.experimental import multihost_utils

    words = np.ascontiguousarray(value).reshape(-1).view(np.uint32)
    return np.asarray(multihost_utils.broadcast_one_to_all(words)).view(value.dtype).reshape(value.shape)


def from_process_zero(compute: Callable[[], np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
    """`compute()` (an array of `shape` and `dtype`) run on process 0 only, its result on every process.

    Every process must call this at the same point with the same shape. An exception on process 0 is
    raised there and, as a JudgeError, on the others."""
    if jax.process_count() == 1:
        return np.asarray(compute(), dtype)
    value, failure = np.zeros(shape, dtype), None
    if jax.process_index() == 0:
        try:
            value = np.asarray(compute(), dtype)
            if value.shape != tuple(shape):
                raise ValueError(f"process 0 computed shape {value.shape}, expected {tuple(shape)}")
        except Exception as error:  # noqa: BLE001 - re-raised below, once the others know
            failure = error
    failed = _broadcast(np.asarray([failure is not None], np.int32))[0]
    if failure is not None:
        raise failure
    if failed:
        raise JudgeError("the judge failed on process 0 (its log says why)")
    return _broadcast(value) if value.size else value


def encode_verdicts(verdicts: Sequence[Verdict]) -> np.ndarray:
    return np.asarray([_ERROR if v.error else _CHOICES.index(v.choice) for v in verdicts], np.int32)


def decode_verdicts(codes: np.ndarray) -> list[Verdict]:
    return [Verdict(None, error=True) if c == _ERROR else Verdict(_CHOICES[c]) for c in codes.tolist()]


class ProcessZeroJudge(Judge):
    """`judge` asked on process 0 only; on one process, exactly `judge`.

    Built on every process (so a missing key or a bad flag stops every process alike), called only on
    process 0 (so its cache, its usage and its bill are process 0's)."""

    def __init__(self, judge: Judge):
        self.inner = judge
        self.name = judge.name

    def judge(self, comparisons: Sequence[Comparison]) -> list[Verdict]:
        if jax.process_count() == 1:
            return self.inner.judge(comparisons)
        verdicts: list[Verdict] = []

        def ask() -> np.ndarray:
            verdicts.extend(self.inner.judge(comparisons))
            return encode_verdicts(verdicts)

        codes = from_process_zero(ask, (len(comparisons),), np.int32)
        return verdicts if jax.process_index() == 0 else decode_verdicts(codes)

    def usage(self) -> dict:
        return self.inner.usage()
