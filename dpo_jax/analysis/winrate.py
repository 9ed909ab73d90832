"""Judged win rates of a policy against a baseline, with the judge's order randomised.

For comparison i, a fair coin (seeded) decides whether the policy's response is shown as A or as B, so
a judge's position bias cancels in expectation instead of inflating or deflating the win rate. A verdict
becomes an outcome for the policy: 1 (win), 0 (loss), 0.5 (tie). Identical responses are a tie by
definition and are not sent to the judge. Comparisons with no verdict at all (`errors`) are excluded
from the rate and counted. Verdicts the judge gave but that could not be read (`unparsable`) are always
counted and, by `unparsable=`, either excluded from the rate ("drop") or counted as losses of the
policy ("loss": TRL's WinRateCallback counts only the verdicts naming the policy as wins).

    win_rate = (wins + ties / 2) / n,   n = comparisons with an outcome

with a percentile bootstrap interval over comparisons (resampling outcomes with replacement).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dpo_jax.judges import TIE, A, B, Comparison, Judge, JudgeError

DEFAULT_RESAMPLES = 10_000
UNPARSABLE_POLICIES = ("drop", "loss")


def bootstrap_interval(
    outcomes: np.ndarray, *, confidence: float = 0.95, num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `outcomes`; (nan, nan) when empty."""
    outcomes = np.asarray(outcomes, np.float64)
    if outcomes.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(num_resamples)
    # Chunks keep the index array small for large n.
    chunk = max(1, 2_000_000 // outcomes.size)
    for start in range(0, num_resamples, chunk):
        stop = min(num_resamples, start + chunk)
        means[start:stop] = outcomes[rng.integers(0, outcomes.size, (stop - start, outcomes.size))].mean(
            axis=1
        )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def order_coins(num: int, seed: int) -> np.ndarray:
    """[num] bool: True where the policy's response is shown as A."""
    return np.random.default_rng(seed).random(num) < 0.5


def judge_win_rate(
    judge: Judge,
    prompts: Sequence[str],
    policy: Sequence[str],
    baseline: Sequence[str],
    *,
    seed: int = 0,
    num_resamples: int = DEFAULT_RESAMPLES,
    unparsable: str = "drop",
) -> tuple[dict, list[dict]]:
    """(summary, one record per comparison) of the policy's responses against the baseline's.

    The summary holds win_rate, ci_low, ci_high (95% bootstrap), wins, ties, losses, n, identical,
    unparsable, errors, position_a_rate (how often the judge picked A among readable verdicts: ~0.5
    for an unbiased judge) and the judge's name.
    """
    if unparsable not in UNPARSABLE_POLICIES:
        raise ValueError(f"unparsable={unparsable!r}; expected one of {UNPARSABLE_POLICIES}")
    if not len(prompts) == len(policy) == len(baseline):
        raise ValueError(
            f"{len(prompts)} prompts, {len(policy)} policy and {len(baseline)} baseline responses"
        )
    policy_first = order_coins(len(prompts), seed)
    asked = [i for i in range(len(prompts)) if policy[i] != baseline[i]]
    comparisons = [
        Comparison(prompts[i], *((policy[i], baseline[i]) if policy_first[i] else (baseline[i], policy[i])))
        for i in asked
    ]
    verdicts = dict(zip(asked, judge.judge(comparisons)))
    outcomes, records = [], []
    counts = dict(wins=0, ties=0, losses=0, identical=0, unparsable=0, errors=0, picked_a=0)
    for i in range(len(prompts)):
        record = dict(
            prompt=prompts[i], policy=policy[i], baseline=baseline[i], policy_is_a=bool(policy_first[i])
        )
        verdict = verdicts.get(i)
        if verdict is None:
            outcome, counts["identical"] = 0.5, counts["identical"] + 1
            record.update(choice="identical")
        else:
            record.update(choice=verdict.choice, reason=verdict.reason, cached=verdict.cached)
            if verdict.error:
                counts["errors"] += 1
                record["error"] = verdict.reason
            elif verdict.choice is None:
                counts["unparsable"] += 1
                record["raw"] = verdict.raw
            counts["picked_a"] += verdict.choice == A
            outcome = {TIE: 0.5, A: float(policy_first[i]), B: float(not policy_first[i])}.get(verdict.choice)
            if verdict.unparsable and unparsable == "loss":
                outcome = 0.0
        if outcome is not None:
            outcomes.append(outcome)
            counts["wins" if outcome == 1 else "losses" if outcome == 0 else "ties"] += 1
        record["outcome"] = outcome
        records.append(record)
    if counts["unparsable"] and len(asked) == counts["unparsable"] + counts["errors"]:
        example = next(r["raw"] for r in records if "raw" in r)
        raise JudgeError(
            f"judge {judge.name}: none of its {counts['unparsable']} replies names a choice, so there is no "
            f"win rate (a wrong template or model?); one reply: {example[:300]!r}"
        )
    outcomes = np.asarray(outcomes)
    low, high = bootstrap_interval(outcomes, num_resamples=num_resamples, seed=seed)
    readable = len(asked) - counts["unparsable"] - counts["errors"]
    picked_a = counts.pop("picked_a")
    summary = dict(
        win_rate=float(outcomes.mean()) if outcomes.size else float("nan"),
        ci_low=low,
        ci_high=high,
        n=int(outcomes.size),
        **counts,
        position_a_rate=picked_a / readable if readable else float("nan"),
        unparsable_counted_as=unparsable,
        judge=judge.name,
    )
    return summary, records
