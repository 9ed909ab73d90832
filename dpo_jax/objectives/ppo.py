"""The maths of PPO for language models (Schulman et al. 2017; Ziegler et al. 2019; Stiennon et al. 2020)
as pure functions on `[B, T]` per-response-token arrays.

A rollout of B responses of (at most) T tokens gives, for every response token t (`mask[b, t] == 1`):
log pi_old(y_t | x, y_<t), log pi_ref(y_t | ...), the value V(x, y_<t) of the state before the token, and
one scalar score per response (the reward model or reward function). The per-token reward is the
KL-penalised score of the classic RLHF recipe:

    r_t = -kl_coef * (log pi_old(y_t) - log pi_ref(y_t))  +  [t is the last response token] * score,

whose undiscounted sum is score - kl_coef * log(pi_old(y|x) / pi_ref(y|x)): the sampled estimate of the
objective E[r] - beta KL(pi || pi_ref) with beta = kl_coef. Advantages come from GAE(gamma, lambda)
with V = 0 after the last token, returns = advantages + values; advantages are whitened over the
batch's real tokens. The losses are PPO's clipped surrogate and clipped value loss, both masked means
over every real token of the batch (one global mean, so sharding the batch does not change them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dpo_jax.objectives.logps import logits_token_logps


def masked_mean(values, mask):
    """Mean of `values` over positions with mask 1 (0 when there are none)."""
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_whiten(values, mask, *, shift_mean: bool = True, eps: float = 1e-8):
    """(values - mean) / std over the masked positions, with the unbiased (n - 1) variance as the
    standard recipes use; `shift_mean=False` keeps the mean (only rescales). Unmasked positions are 0."""
    mask = mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    mean = jnp.sum(values * mask) / count
    variance = jnp.sum(jnp.square(values - mean) * mask) / jnp.maximum(count - 1.0, 1.0)
    whitened = (values - mean) * jax.lax.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return jnp.where(mask > 0, whitened, 0.0)


def last_token_index(mask):
    """[B] index of the last position with mask 1 in each row (0 for an empty row)."""
    positions = jnp.arange(mask.shape[-1])
    return jnp.max(jnp.where(mask > 0, positions, 0), axis=-1)


def kl_penalised_rewards(scores, logps, ref_logps, mask, *, kl_coef: float):
    """[B, T] per-token rewards: -kl_coef * (log pi_old - log pi_ref) on every response token, plus the
    response's scalar score [B] on its last token. Returns (rewards, per-token log-ratio)."""
    mask = mask.astype(jnp.float32)
    log_ratio = (logps - ref_logps) * mask
    at_end = jax.nn.one_hot(last_token_index(mask), mask.shape[-1], dtype=jnp.float32)
    return -kl_coef * log_ratio + scores[:, None] * at_end, log_ratio


def generalized_advantages(rewards, values, mask, *, gamma: float, lam: float):
    """GAE: A_t = sum_k (gamma lam)^k delta_{t+k}, delta_t = r_t + gamma V_{t+1} - V_t, V = 0 after the
    last real token. Returns (advantages, returns = advantages + values), both 0 off the mask."""
    mask = mask.astype(jnp.float32)
    values = values * mask
    next_values = jnp.pad(values[:, 1:], ((0, 0), (0, 1)))
    deltas = (rewards + gamma * next_values - values) * mask

    def backwards(carry, inputs):
        delta, keep = inputs
        advantage = delta + gamma * lam * carry * keep
        return advantage, advantage

    # Scan from the last position to the first over the time axis; `keep` cuts the recursion at padding.
    keep_next = jnp.pad(mask[:, 1:], ((0, 0), (0, 1)))
    _, advantages = jax.lax.scan(
        backwards, jnp.zeros(rewards.shape[0]), (deltas.T, keep_next.T), reverse=True
    )
    advantages = advantages.T * mask
    return advantages, (advantages + values) * mask


def clipped_policy_loss(logps, old_logps, advantages, mask, *, clip_range: float):
    """PPO's clipped surrogate: mean over tokens of max(-A rho, -A clip(rho, 1 - eps, 1 + eps)),
    rho = pi / pi_old. Returns (loss, clip fraction, approximate KL(pi_old || pi))."""
    log_rho = logps - old_logps
    ratio = jnp.exp(log_rho)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(jnp.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).astype(jnp.float32), mask)
    # The k3 estimator (Schulman 2020): unbiased and never negative.
    approx_kl = masked_mean(jnp.expm1(log_rho) - log_rho, mask)
    return loss, clip_fraction, approx_kl


def clipped_value_loss(values, old_values, returns, mask, *, clip_range: float):
    """0.5 * mean over tokens of max((V - R)^2, (V_clipped - R)^2), V_clipped within clip_range of the
    rollout's V. Returns (loss, fraction of tokens where the clipped term was the larger)."""
    clipped_values = old_values + jnp.clip(values - old_values, -clip_range, clip_range)
    unclipped = jnp.square(values - returns)
    clipped = jnp.square(clipped_values - returns)
    loss = 0.5 * masked_mean(jnp.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).astype(jnp.float32), mask)


def token_entropy(logits):
    """[...] entropy of softmax(logits) over the last axis, in float32."""
    logits = logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def response_token_logps(logits, tokens):
    """[B, T] log softmax(logits)[token] in float32, from the logits at the predicting positions [B, T, V]."""
    return logits_token_logps(logits, tokens)
