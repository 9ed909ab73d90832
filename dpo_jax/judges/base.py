"""The judge interface: which of two responses to a prompt is better.

A judge sees `Comparison`s (prompt, response shown as "A", response shown as "B") and returns one
`Verdict` per comparison, in order. Order randomisation is the caller's job (evaluation/winrate.py):
a judge answers about A and B exactly as shown, so a position-biased judge is measured, not hidden.

Two kinds:
  * pairwise judges (an LLM asked which is better) implement `judge` directly;
  * scoring judges (a reward model, a classifier) implement `score(prompts, responses) -> [N]` and get
    `judge` for free: the higher score wins, equal scores tie. Scores are also what the IMDb pipeline
    uses as its ground-truth reward.

A new judge is a subclass with a `name` and one of those two methods.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

import numpy as np

A = "A"
B = "B"
TIE = "tie"


class JudgeError(RuntimeError):
    """A judge cannot work at all (no key, refused request, unknown model, missing dependency).

    Raised instead of returning verdicts: a run must stop rather than report a partial result.
    """


@dataclasses.dataclass(frozen=True)
class Comparison:
    prompt: str
    response_a: str
    response_b: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    """`choice` is "A", "B", "tie", or None when the judge's answer could not be read (`unparsable`)
    or no answer came at all (`error`, e.g. retries exhausted). `reason` is the judge's explanation or
    the error message; `raw` the judge's full reply, when there is one."""

    choice: str | None
    reason: str = ""
    raw: str = ""
    error: bool = False
    cached: bool = False

    @property
    def unparsable(self) -> bool:
        return self.choice is None and not self.error


class Judge(abc.ABC):
    """Returns one Verdict per Comparison, in order."""

    name: str = "judge"

    @abc.abstractmethod
    def judge(self, comparisons: Sequence[Comparison]) -> list[Verdict]: ...

    def usage(self) -> dict:
        """What judging has cost so far (requests, tokens, money); empty for local judges."""
        return {}


class ScoringJudge(Judge):
    """A judge that scores each (prompt, response) on its own; the higher score wins."""

    @abc.abstractmethod
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """float64 [N] scores of prompt[i] + response[i]."""

    def judge(self, comparisons: Sequence[Comparison]) -> list[Verdict]:
        if not comparisons:
            return []
        prompts = [c.prompt for c in comparisons]
        scores_a = self.score(prompts, [c.response_a for c in comparisons])
        scores_b = self.score(prompts, [c.response_b for c in comparisons])
        verdicts = []
        for a, b in zip(scores_a, scores_b):
            choice = A if a > b else B if b > a else TIE
            verdicts.append(Verdict(choice, reason=f"score A {a:.6g}, score B {b:.6g}"))
        return verdicts
