"""Exact evaluation on the synthetic task: policies as [N, C] tables of log pi(y|x) over every completion.

Owns: teacher-forced log-probs of every completion under a model (`completion_logprobs`), expected
reward and KL to the reference (`policy_stats`), the closed-form optimum of the KL-constrained
objective, pi*_beta(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x) (`optimal_logprobs`), its reward-vs-KL
frontier and its inverse (`frontier`, `optimum_reward_at_kl`), and `gain_ratio`.

All statistics are float64 numpy and average over prompts with equal weight:
  reward = E_x E_{y~pi}[r(x,y)],  kl = E_x KL(pi(.|x) || pi_ref(.|x)).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.objectives import sequence_logps

# Bisection on the inverse temperature 1/beta: iterations enough to pin float64 down.
_BISECTION_STEPS = 200
_MAX_DOUBLINGS = 200
# A KL below this is the float32 tables' normalisation error (rows sum to 1 within ~1e-7), not a
# policy: best-of-1, which renormalises pi_ref's table, lands at ~5e-9.
_SAME_AS_REFERENCE_KL = 1e-6


def log_normalise(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis in float64; -inf entries (zero probability) stay -inf."""
    logits = np.asarray(logits, np.float64)
    top = np.max(logits, axis=-1, keepdims=True)
    return logits - (top + np.log(np.sum(np.exp(logits - top), axis=-1, keepdims=True)))


@functools.partial(jax.jit, static_argnames="apply_fn")
def _completion_logps_chunk(apply_fn, params, prompts, completions, rows):
    """log pi(completion | prompt) for flat (prompt, completion) row numbers `rows` [R]."""
    num_completions = completions.shape[0]
    prompt_part, completion_part = prompts[rows // num_completions], completions[rows % num_completions]
    input_ids = jnp.concatenate([prompt_part, completion_part], axis=1)
    loss_mask = jnp.concatenate([jnp.zeros_like(prompt_part), jnp.ones_like(completion_part)], axis=1)
    logits = apply_fn(params, input_ids, jnp.ones_like(input_ids))
    return sequence_logps(logits, input_ids, loss_mask)[0]


def completion_logprobs(
    apply_fn: Callable, params, prompts: np.ndarray, completions: np.ndarray, *, batch_size: int
) -> np.ndarray:
    """[N, C] float64 log pi(y_c | x_n) for every prompt and completion, by teacher forcing.

    Each (prompt, completion) pair is one sequence `prompt + completion` (no padding: prompts and
    completions have fixed lengths), summed over the completion tokens with `sequence_logps`.
    With a model whose vocabulary is exactly the task's, each row of exp() sums to 1.

    Args:
      apply_fn: `(params, input_ids [R, P + T], attention_mask [R, P + T]) -> logits [R, P + T, V]`.
        It is a static argument of a jitted function: pass the same object on every call to reuse
        the compiled program.
      params: the model's params (may be sharded; the sequences are not).
      prompts: [N, P] int.
      completions: [C, T] int, e.g. `SyntheticTask.all_completions()`.
      batch_size: sequences per forward pass (the last batch is padded with repeats and trimmed).
    """
    prompts = jnp.asarray(prompts, jnp.int32)
    completions = jnp.asarray(completions, jnp.int32)
    total = prompts.shape[0] * completions.shape[0]
    chunks = []
    # Dispatch every chunk before reading any back, so host and device work overlap.
    for start in range(0, total, batch_size):
        rows = np.arange(start, start + batch_size) % total
        chunks.append(_completion_logps_chunk(apply_fn, params, prompts, completions, jnp.asarray(rows)))
    flat = np.concatenate([np.asarray(chunk, np.float64) for chunk in chunks])[:total]
    return flat.reshape(prompts.shape[0], completions.shape[0])


def _per_prompt_stats(logp_policy, logp_ref, reward):
    """(E_pi[r], KL(pi || pi_ref)) per prompt, [N] each; completions with pi = 0 contribute 0."""
    logp_policy, logp_ref, reward = (np.asarray(a, np.float64) for a in (logp_policy, logp_ref, reward))
    probs = np.exp(logp_policy)
    supported = probs > 0
    log_ratio = np.where(supported, logp_policy - np.where(supported, logp_ref, 0.0), 0.0)
    return np.sum(probs * reward, axis=-1), np.sum(probs * log_ratio, axis=-1)


def policy_stats(logp_policy: np.ndarray, logp_ref: np.ndarray, reward: np.ndarray) -> dict[str, float]:
    """{"reward": E_x E_pi[r], "kl": E_x KL(pi || pi_ref)} from [N, C] tables."""
    rewards, kls = _per_prompt_stats(logp_policy, logp_ref, reward)
    return {"reward": float(np.mean(rewards)), "kl": float(np.mean(kls))}


def _tilted_logprobs(logp_ref, reward, inverse_beta):
    return log_normalise(np.asarray(logp_ref, np.float64) + inverse_beta * np.asarray(reward, np.float64))


def optimal_logprobs(logp_ref: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    """[N, C] log pi*_beta = log(pi_ref exp(r / beta) / Z), the maximiser of E[r] - beta KL."""
    if not beta > 0:
        raise ValueError(f"beta={beta!r} must be > 0")
    return _tilted_logprobs(logp_ref, reward, 1.0 / beta)


def frontier(logp_ref: np.ndarray, reward: np.ndarray, betas: Iterable[float]) -> list[dict[str, float]]:
    """The optimum's (beta, kl, reward) for each beta, in the order given."""
    points = []
    for beta in betas:
        stats = policy_stats(optimal_logprobs(logp_ref, reward, beta), logp_ref, reward)
        points.append({"beta": float(beta), **stats})
    return points


def _reward_maximiser_stats(logp_ref, reward):
    """The beta -> 0 limit of pi*: pi_ref restricted to each prompt's reward-maximising completions."""
    logp_ref, reward = np.asarray(logp_ref, np.float64), np.asarray(reward, np.float64)
    # pi*_beta never leaves pi_ref's support, so neither does its limit.
    reachable = np.where(np.isfinite(logp_ref), reward, -np.inf)
    best = reachable.max(axis=-1, keepdims=True)
    # Rewards that are sums of per-token terms tie exactly in theory but may differ in the last ulp.
    is_best = np.isfinite(logp_ref) & np.isclose(reward, best, rtol=1e-12, atol=1e-12)
    limit = log_normalise(np.where(is_best, logp_ref, -np.inf))
    return policy_stats(limit, logp_ref, reward)


def optimum_reward_at_kl(logp_ref: np.ndarray, reward: np.ndarray, kl: float) -> float:
    """The best E_x E_pi[r] of any policy with E_x KL(pi || pi_ref) <= kl: the frontier read at `kl`.

    The optimum at a KL budget is pi*_beta for the beta whose KL equals the budget; KL(pi*_beta) falls
    monotonically in beta (d KL / d(1/beta) = Var_pi*(r) / beta >= 0 per prompt), so bisection on
    1/beta finds it. The two ends of the range are exact, not approximations:
      * kl <= 0: only pi_ref itself qualifies; its reward is returned;
      * kl >= the KL of the reward maximiser (pi_ref restricted to argmax_y r, the beta -> 0 limit):
        no policy beats E_x max_y r, which is returned.
    """
    logp_ref, reward = np.asarray(logp_ref, np.float64), np.asarray(reward, np.float64)
    reference = policy_stats(logp_ref, logp_ref, reward)
    if kl <= 0:
        return reference["reward"]
    maximiser = _reward_maximiser_stats(logp_ref, reward)
    if kl >= maximiser["kl"]:
        return maximiser["reward"]

    def stats_at(inverse_beta):
        return policy_stats(_tilted_logprobs(logp_ref, reward, inverse_beta), logp_ref, reward)

    low, high = 0.0, 1.0
    for _ in range(_MAX_DOUBLINGS):
        if stats_at(high)["kl"] >= kl:
            break
        low, high = high, 2.0 * high
    else:
        # The budget sits within float64 resolution of the maximiser's KL.
        return maximiser["reward"]
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if stats_at(middle)["kl"] < kl:
            low = middle
        else:
            high = middle
    # `low` keeps KL <= kl, so the returned reward is achievable within the budget.
    return stats_at(low)["reward"]


def gain_ratio(policy_reward: float, reference_reward: float, optimum_reward: float) -> float:
    """Fraction of the reward gain available at the policy's KL that the policy realised.

    (policy - reference) / (optimum - reference): 1 on the frontier, 0 for no improvement over pi_ref,
    negative when worse. nan when the optimum gains nothing (a KL budget of 0).
    """
    available = optimum_reward - reference_reward
    if available == 0:
        return float("nan")
    return float((policy_reward - reference_reward) / available)


def method_stats(logp: np.ndarray, logp_ref: np.ndarray, reward: np.ndarray) -> dict[str, float]:
    """A policy's exact reward and KL, the optimum's reward at that KL, and the gain ratio (nan for a
    policy within the tables' rounding of pi_ref, e.g. best-of-1: its ratio would be rounding noise)."""
    stats = policy_stats(logp, logp_ref, reward)
    reference = policy_stats(logp_ref, logp_ref, reward)["reward"]
    optimum = optimum_reward_at_kl(logp_ref, reward, stats["kl"])
    ratio = (
        gain_ratio(stats["reward"], reference, optimum)
        if abs(stats["kl"]) > _SAME_AS_REFERENCE_KL
        else float("nan")
    )
    return {**stats, "optimum_reward": optimum, "gain_ratio": ratio}
