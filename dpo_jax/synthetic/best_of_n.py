"""Best-of-N sampling from pi_ref, exactly: the distribution of the best of N draws under a proxy reward.

Best-of-N draws y_1..y_N ~ pi_ref(.|x) independently and returns the draw the proxy reward (the learned
reward model) ranks highest. Over an enumerable completion set its distribution is exact: sort the
completions by proxy reward; for a group G of completions whose proxy rewards tie at v,

    P(best in G) = F(v)^N - F(v-)^N,   F(v) = pi_ref(proxy <= v),

and ties are broken uniformly among the tied draws, so within G the winner is distributed as pi_ref
restricted to G: P_BoN(y) = pi_ref(y) / pi_ref(G) * P(best in G). N = 1 is pi_ref itself. The
difference of powers is formed as F^N * (1 - (F(v-)/F(v))^N) with expm1/log1p, which keeps its
relative precision when both powers are close to 1.

Its expected TRUE reward and KL(BoN || pi_ref) then follow from `exact.policy_stats`; the KL obeys the
known bound log N - (N - 1) / N (equal for a continuous pi_ref, below it for a discrete one).
"""

from __future__ import annotations

import numpy as np

from dpo_jax.synthetic.exact import log_normalise


def _best_of_n_row(logp_ref: np.ndarray, proxy: np.ndarray, n: int) -> np.ndarray:
    order = np.argsort(proxy, kind="stable")
    sorted_proxy, logp = proxy[order], logp_ref[order]
    probs = np.exp(logp)
    new_group = np.concatenate([[True], sorted_proxy[1:] != sorted_proxy[:-1]])
    group = np.cumsum(new_group) - 1
    group_mass = np.bincount(group, weights=probs)
    upper = np.minimum(np.cumsum(group_mass), 1.0)  # F(v) at each group
    lower = upper - group_mass  # F(v-)
    with np.errstate(divide="ignore", invalid="ignore"):
        # log P(best in G) = N log F(v) + log(1 - (F(v-) / F(v))^N)
        log_upper = np.log(upper)
        ratio_power = n * (np.log(np.maximum(lower, 0.0)) - log_upper)
        log_best = n * log_upper + np.log(-np.expm1(ratio_power))
        log_group_mass = np.log(group_mass)
        logp_best = np.where(group_mass[group] > 0, logp - log_group_mass[group] + log_best[group], -np.inf)
    out = np.empty_like(logp_best)
    out[order] = logp_best
    return out


def best_of_n_logprobs(logp_ref: np.ndarray, proxy_reward: np.ndarray, n: int) -> np.ndarray:
    """[N, C] log P_BoN(y|x) of best-of-`n` sampling from pi_ref ranked by `proxy_reward` [N, C]."""
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"best-of-n needs an integer n >= 1, got {n!r}")
    logp_ref = log_normalise(logp_ref)
    proxy_reward = np.asarray(proxy_reward, np.float64)
    if proxy_reward.shape != logp_ref.shape:
        raise ValueError(
            f"proxy_reward {proxy_reward.shape} and logp_ref {logp_ref.shape} must have one shape"
        )
    rows = [_best_of_n_row(ref, proxy, int(n)) for ref, proxy in zip(logp_ref, proxy_reward)]
    # Renormalise away the last ulp of rounding: each row sums to 1 up to float64 error already.
    return log_normalise(np.stack(rows))


def kl_upper_bound(n: int) -> float:
    """log N - (N - 1) / N: KL(BoN || pi_ref) for a continuous pi_ref, an upper bound for a discrete one."""
    return float(np.log(n) - (n - 1) / n)
