"""A host-only judge on several processes: process 0 alone asks it, the others get its choices (the
broadcast replaced by what process 0 would send), and a failure on process 0 stops every process."""

import numpy as np
import pytest

from dpo_jax.judges import TIE, A, B, Comparison, Judge, JudgeError, Verdict, process_zero
from dpo_jax.judges.process_zero import ProcessZeroJudge, encode_verdicts

COMPARISONS = [Comparison(f"prompt {i}", "a", "b") for i in range(5)]
VERDICTS = [
    Verdict(A, reason="A reads better"),
    Verdict(B),
    Verdict(TIE),
    Verdict(None, raw="no idea"),  # unparsable
    Verdict(None, reason="HTTP 503 after 6 retries", error=True),
]


class CountingJudge(Judge):
    """An API judge stand-in: counts the calls it would pay for."""

    name = "counting"

    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail

    def judge(self, comparisons):
        self.calls += 1
        if self.fail:
            raise JudgeError("401: bad key")
        return VERDICTS[: len(comparisons)]


def as_process(monkeypatch, index: int, sent_by_process_zero=()):
    """This process is `index` of 2; returns what it broadcast (process 0's values, as sent)."""
    monkeypatch.setattr(process_zero.jax, "process_count", lambda: 2)
    monkeypatch.setattr(process_zero.jax, "process_index", lambda: index)
    sent, seen = iter(sent_by_process_zero), []

    def broadcast(value):
        seen.append(value)
        return value if index == 0 else next(sent)

    monkeypatch.setattr(process_zero, "_broadcast", broadcast)
    return seen


def test_process_zero_asks_once_and_sends_the_choices(monkeypatch):
    seen = as_process(monkeypatch, 0)
    inner = CountingJudge()
    assert ProcessZeroJudge(inner).judge(COMPARISONS) == VERDICTS
    assert inner.calls == 1
    assert [v.tolist() for v in seen] == [[0], encode_verdicts(VERDICTS).tolist()]


def test_another_process_never_calls_the_judge_and_gets_process_zeros_choices(monkeypatch):
    as_process(monkeypatch, 1, [np.asarray([0], np.int32), encode_verdicts(VERDICTS)])
    inner = CountingJudge()
    got = ProcessZeroJudge(inner).judge(COMPARISONS)
    assert inner.calls == 0
    assert [(v.choice, v.error, v.unparsable) for v in got] == [
        (v.choice, v.error, v.unparsable) for v in VERDICTS
    ]


def test_a_judge_failing_on_process_zero_stops_every_process(monkeypatch):
    seen = as_process(monkeypatch, 0)
    with pytest.raises(JudgeError, match="bad key"):
        ProcessZeroJudge(CountingJudge(fail=True)).judge(COMPARISONS)
    assert [v.tolist() for v in seen] == [[1]]  # the others are told before process 0 raises
    as_process(monkeypatch, 1, [np.asarray([1], np.int32)])
    inner = CountingJudge()
    with pytest.raises(JudgeError, match="process 0"):
        ProcessZeroJudge(inner).judge(COMPARISONS)
    assert inner.calls == 0


def test_the_broadcast_keeps_float64_bit_for_bit():
    # Through the collective as 32-bit words (x64 is off): no rounding to float32.
    value = np.asarray([[0.1, 1e300], [-0.0, 1 / 3]], np.float64)
    np.testing.assert_array_equal(process_zero._broadcast(value), value)
    assert process_zero._broadcast(value).dtype == np.float64
