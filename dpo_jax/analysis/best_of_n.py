"""Best-of-N, the DPO paper's baseline: N samples of a policy per prompt, the one a reward model scores
highest kept. One selection for every evaluation that uses it (win rates, the reward-vs-KL frontier).

The KL of the Best-of-N policy from the policy it samples is not estimated from samples: it is the
analytic value log N - (N - 1) / N (Stiennon et al. 2020, Hilton's derivation), exact when the reward
of a sample has no atoms (ties have probability 0) and an upper bound otherwise (Beirami et al. 2024),
as for a language model, whose completions (and so their rewards) repeat with positive probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def best_of_n_rows(scores, n: int) -> np.ndarray:
    """The row of the highest score in each consecutive group of `n` rows (the first on a tie)."""
    scores = np.asarray(scores, np.float64)
    if n < 1 or scores.ndim != 1 or scores.size % n:
        raise ValueError(f"need n >= 1 and 1-d scores in groups of n; got n={n}, shape {scores.shape}")
    return np.arange(0, scores.size, n) + np.argmax(scores.reshape(-1, n), axis=1)


def select_best_of_n(reward_judge, prompts: Sequence[str], samples, n: int, rows=None) -> np.ndarray:
    """Rows of `samples` (sampling.batched.Samples of `prompts`) kept by Best-of-N: among `rows` (default
    all, in order) taken in consecutive groups of `n`, each group's best by `reward_judge.score`. The
    rows of a group must share a prompt."""
    rows = np.arange(len(samples.texts)) if rows is None else np.asarray(rows)
    prompt_of = samples.prompt_index[rows]
    if rows.size % n or np.any(prompt_of.reshape(-1, n) != prompt_of[::n, None]):
        raise ValueError(f"Best-of-{n}: the candidate rows do not form groups of {n} samples of one prompt")
    scores = reward_judge.score([prompts[i] for i in prompt_of], [samples.texts[r] for r in rows])
    return rows[best_of_n_rows(scores, n)]


def best_of_n_kl(n: int) -> float:
    """KL(pi_BoN || pi) = log N - (N - 1) / N nats: the analytic bound (module docstring)."""
    if n < 1:
        raise ValueError(f"Best-of-N needs N >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def parse_best_of(text: str) -> tuple[int, ...]:
    """A comma-separated list of N (each >= 2) for Best-of-N points: "4,16" -> (4, 16); "" -> ()."""
    try:
        values = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise ValueError("expected whole numbers N, comma separated (e.g. 4,16)") from None
    if any(n < 2 for n in values):
        raise ValueError("each N must be >= 2 (N=1 is the reference itself, its KL-0 point)")
    return values
