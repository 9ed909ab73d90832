"""The controls that split DPO's residual on the synthetic task, and where a policy departs from pi*.

Owns:
  * `tabular_dpo`: a tabular policy (one logit per prompt x completion, initialised at pi_ref's) trained
    with the package's `dpo_loss` on a pair set. It can represent pi* exactly, so what it misses is
    the pairs' fault (and the optimiser's), never the policy's capacity.
  * `population_dpo`: the same tabular policy minimising the population DPO loss, the expectation over
    every ordered completion pair (y1 != y2) drawn from pi_ref x pi_ref with Bradley-Terry labels,
    computed by enumeration: DPO with infinite pairs. Its minimiser is pi* (the paper's Theorem 1), so
    reaching pi*'s gain checks the loss and the exact evaluation together.
  * `departure_by_reference_probability`: per completion, log pi - log pi* (the log-ratio's departure
    from r / beta, normalised), binned by pi_ref's probability of the completion.

Why a tabular policy needs no normaliser in the loss: DPO's score is a difference of two log-ratios of
the same prompt, in which log Z of the logits cancels. The losses still take log_softmax so that the
scores are the policy's log-probs, as in the trainer.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpo_jax.objectives import dpo_loss
from dpo_jax.synthetic.exact import log_normalise, method_stats, optimal_logprobs

# Population control: Jacobi-preconditioned Newton steps stop when no logit moves more than this
# (float64, so the gain ratio is settled far below the 1e-3 it is checked to).
POPULATION_TOLERANCE = 1e-9
POPULATION_MAX_ITERATIONS = 300
# Departure bins: pi_ref(y|x) in decades, from below 1e-6 to 1.
DEPARTURE_EDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _pair_scores(logits, logp_ref, rows, chosen, rejected):
    logp = jax.nn.log_softmax(logits, axis=-1)
    ratio = logp - logp_ref
    return jnp.stack([ratio[rows, chosen], ratio[rows, rejected]], axis=1)


@functools.partial(jax.jit, static_argnames=("beta", "learning_rate"))
def _tabular_steps(logits, opt_state, logp_ref, rows, chosen, rejected, num_steps, *, beta, learning_rate):
    """`num_steps` full-batch Adam steps (a traced count: one program for every stretch)."""
    optimizer = optax.sgd(learning_rate)

    def loss_fn(params):
        return jnp.sum(dpo_loss(_pair_scores(params, logp_ref, rows, chosen, rejected), beta=beta))

    def step(_, carry):
        params, state, _ = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return jax.lax.fori_loop(0, num_steps, step, (logits, opt_state, jnp.zeros((), logits.dtype)))


def evaluation_steps(num_steps: int, points: int) -> list[int]:
    """About `points` step counts spaced geometrically up to `num_steps` (always included)."""
    if num_steps < 1:
        raise ValueError(f"tabular control: num_steps={num_steps} must be >= 1")
    grid = np.unique(np.round(np.geomspace(1, num_steps, max(points, 1))).astype(int))
    return sorted(set(grid.tolist()) | {num_steps})


def tabular_dpo(
    logp_ref: np.ndarray,
    reward: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    beta: float,
    learning_rate: float,
    num_steps: int,
    points: int = 12,
) -> list[dict]:
    """Full-batch gradient descent on the summed DPO loss of `pairs` = (rows [M] of `logp_ref`, chosen
    [M], rejected [M] completion indices), from logits = log pi_ref [N, C]; the trajectory's statistics.

    The step is `learning_rate` times 4 / (beta**2 k), k the most pairs any one logit is in: the loss's
    curvature in a logit is at most beta**2 k / 4, so a `learning_rate` below 2 is stable and the
    trajectory follows the gradient flow (the path whose best point is reported beside its end). Adam
    would not: its first steps move every logit in a pair by the same amount, whatever the evidence.

    Returns one record per evaluated step: {"step", "loss", "kl", "reward", "optimum_reward",
    "gain_ratio"}, the exact statistics over the N prompts of `logp_ref` against `reward` [N, C].
    """
    rows, chosen, rejected = (jnp.asarray(a, jnp.int32) for a in pairs)
    if not len(rows):
        raise ValueError("tabular control: no pairs on its prompts")
    counts = np.zeros(np.shape(logp_ref), np.int64)
    np.add.at(counts, (np.asarray(rows), np.asarray(chosen)), 1)
    np.add.at(counts, (np.asarray(rows), np.asarray(rejected)), 1)
    step_size = float(learning_rate) * 4.0 / (float(beta) ** 2 * int(counts.max()))
    ref32 = jnp.asarray(logp_ref, jnp.float32)
    logits = ref32
    opt_state = optax.sgd(step_size).init(logits)
    trajectory, done = [], 0
    for step in evaluation_steps(num_steps, points):
        logits, opt_state, loss = _tabular_steps(
            logits,
            opt_state,
            ref32,
            rows,
            chosen,
            rejected,
            step - done,
            beta=float(beta),
            learning_rate=step_size,
        )
        done = step
        stats = method_stats(log_normalise(np.asarray(logits, np.float64)), logp_ref, reward)
        trajectory.append({"step": step, "loss": float(loss), **stats})
    return trajectory


def _population_terms(logits, logp_ref, reward, beta):
    """(loss, grad, Hessian diagonal) of one prompt's population DPO loss in its logits [C]."""

    def loss_fn(params):
        logp = jax.nn.log_softmax(params)
        ratio = logp - logp_ref
        size = ratio.shape[0]
        scores = jnp.stack(
            [jnp.broadcast_to(ratio[:, None], (size, size)), jnp.broadcast_to(ratio[None, :], (size, size))],
            axis=-1,
        ).reshape(size * size, 2)
        losses = dpo_loss(scores, beta=beta).reshape(size, size)  # row i chosen over column j
        p = jnp.exp(logp_ref)
        label = jax.nn.sigmoid(reward[:, None] - reward[None, :])  # Bradley-Terry: P(i preferred to j)
        weights = (p[:, None] * p[None, :]) * (1.0 - jnp.eye(size, dtype=p.dtype))
        # An ordered draw (y1, y2) contributes both of its labellings; y1 == y2 is dropped, as in sampling.
        return 2.0 * jnp.sum(weights * label * losses) / jnp.sum(weights), (ratio, p, weights)

    (loss, (ratio, p, weights)), grad = jax.value_and_grad(loss_fn, has_aux=True)(logits)
    margin = beta * (ratio[:, None] - ratio[None, :])
    curvature = jax.nn.sigmoid(margin) * jax.nn.sigmoid(-margin)
    hessian_diagonal = 2.0 * beta**2 * jnp.sum(weights * curvature, axis=1) / jnp.sum(weights)
    return loss, grad, hessian_diagonal


_population_terms_jit = jax.jit(_population_terms, static_argnames="beta")


def _minimise_one_prompt(
    logp_ref_row: np.ndarray, reward_row: np.ndarray, beta: float
) -> tuple[np.ndarray, dict]:
    logits = jnp.asarray(logp_ref_row, jnp.float64)
    ref, reward = jnp.asarray(logp_ref_row, jnp.float64), jnp.asarray(reward_row, jnp.float64)
    loss, grad, diagonal = _population_terms_jit(logits, ref, reward, beta)
    scale, iterations, largest_move = 1.0, 0, math.inf
    # Diagonal Newton with step halving: the loss is convex in the logits, its Hessian a weighted
    # Laplacian over completion pairs (constants are its null space: the gauge log Z), for which the
    # diagonal is a good preconditioner.
    while iterations < POPULATION_MAX_ITERATIONS and largest_move > POPULATION_TOLERANCE:
        iterations += 1
        move = scale * grad / jnp.maximum(diagonal, jnp.finfo(jnp.float64).tiny)
        trial = logits - move
        trial_loss, trial_grad, trial_diagonal = _population_terms_jit(trial, ref, reward, beta)
        if float(trial_loss) <= float(loss):
            logits, loss, grad, diagonal = trial, trial_loss, trial_grad, trial_diagonal
            largest_move = float(jnp.max(jnp.abs(move)))
            scale = min(1.0, 2.0 * scale)
        else:
            scale *= 0.5
            if scale < 1e-12:  # no descent left at float64 resolution: converged
                break
    info = {"iterations": iterations, "loss": float(loss), "grad_max": float(jnp.max(jnp.abs(grad)))}
    return np.asarray(logits, np.float64), info


def population_dpo(logp_ref: np.ndarray, reward: np.ndarray, *, beta: float) -> dict:
    """The tabular policy at the minimum of the population DPO loss on each prompt of `logp_ref`
    [N, C]; its exact statistics, the optimum pi*_beta's, and the minimiser's convergence record."""
    if not beta > 0:
        raise ValueError(f"population control: beta={beta!r} must be > 0")
    with jax.enable_x64(True):
        solved = [_minimise_one_prompt(row, r, float(beta)) for row, r in zip(logp_ref, reward)]
    logp = log_normalise(np.stack([logits for logits, _ in solved]))
    optimum = optimal_logprobs(logp_ref, reward, beta)
    return {
        **method_stats(logp, logp_ref, reward),
        "optimum_kl": method_stats(optimum, logp_ref, reward)["kl"],
        "max_abs_log_ratio_to_optimum": float(np.max(np.abs(logp - optimum))),
        "iterations": max(info["iterations"] for _, info in solved),
        "loss": float(np.mean([info["loss"] for _, info in solved])),
        "grad_max": max(info["grad_max"] for _, info in solved),
    }


def departure_by_reference_probability(
    logp_policy: np.ndarray,
    logp_ref: np.ndarray,
    reward: np.ndarray,
    beta: float,
    edges=DEPARTURE_EDGES,
) -> list[dict]:
    """Per bin of pi_ref(y|x) over every (prompt, completion) cell of the [N, C] tables: how many cells,
    the probability mass pi_ref, pi and pi* put there, the mean departure log pi - log pi* (unweighted
    and pi-weighted), and the bin's share of KL(pi || pi_ref) beside pi*'s share of its own KL (both
    averaged over prompts): where the bins' KL shares differ is where the policy's KL over- or
    undershoots the optimum's."""
    logp_policy, logp_ref = np.asarray(logp_policy, np.float64), np.asarray(logp_ref, np.float64)
    optimum = optimal_logprobs(logp_ref, reward, beta)
    probs_ref, probs, probs_opt = np.exp(logp_ref), np.exp(logp_policy), np.exp(optimum)
    departure = logp_policy - optimum
    num_prompts = logp_ref.shape[0]
    bins = []
    for low, high in zip(edges[:-1], edges[1:]):
        cells = (probs_ref >= low) & (probs_ref < high) if high < 1.0 else (probs_ref >= low)
        count = int(cells.sum())
        policy_mass = float(probs[cells].sum() / num_prompts)
        bins.append(
            {
                "ref_prob_low": low,
                "ref_prob_high": high,
                "cells": count,
                "ref_mass": float(probs_ref[cells].sum() / num_prompts),
                "policy_mass": policy_mass,
                "optimum_mass": float(probs_opt[cells].sum() / num_prompts),
                "mean_departure": float(departure[cells].mean()) if count else float("nan"),
                "policy_weighted_departure": (
                    float((probs[cells] * departure[cells]).sum() / num_prompts / policy_mass)
                    if policy_mass > 0
                    else float("nan")
                ),
                "policy_kl_share": float((probs * (logp_policy - logp_ref))[cells].sum() / num_prompts),
                "optimum_kl_share": float((probs_opt * (optimum - logp_ref))[cells].sum() / num_prompts),
            }
        )
    return bins
