"""One PPO rollout: sample responses with the KV cache, score them, and turn them into training targets.

`sample_responses` draws y ~ pi(.|x) at temperature 1 (PPO's ratios are against the sampling
distribution, so it must be the policy itself). `make_rollout_targets` is the jitted teacher-forced
pass over prompt + response that gives, per response token, log pi_old, log pi_ref and V, then the
KL-penalised rewards, GAE advantages (whitened) and returns (`dpo_jax.objectives.ppo`).

Layout: prompts are left padded to width P, responses right padded to T, so the sequence is
[B, P + T] and response token t is predicted at position P - 1 + t.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dpo_jax.objectives.ppo import (
    generalized_advantages,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    response_token_logps,
)
from dpo_jax.sampling import SamplingSettings, generate


def sample_responses(
    model, params, prompt_ids, prompt_mask, *, rng, max_new_tokens: int, eos_id, pad_id: int
):
    """(response_ids [B, T], response_mask [B, T]) sampled from the policy at temperature 1."""
    out = generate(
        model,
        params,
        prompt_ids,
        prompt_mask,
        settings=SamplingSettings(temperature=1.0, max_new_tokens=max_new_tokens),
        rng=rng,
        eos_id=eos_id,
        pad_id=pad_id,
    )
    return out["tokens"], out["mask"]


def response_slice(logits_or_values, prompt_length: int, response_length: int):
    """The positions that predict the response tokens (and the states before them)."""
    return jax.lax.slice_in_dim(
        logits_or_values, prompt_length - 1, prompt_length - 1 + response_length, axis=1
    )


def policy_outputs(apply_fn, params, batch, prompt_length: int):
    """(log pi of each response token [B, T], logits at those positions [B, T, V], values [B, T])."""
    response_ids = batch["response_ids"]
    logits, values = apply_fn(params, batch["input_ids"], batch["attention_mask"])
    length = response_ids.shape[1]
    logits = response_slice(logits, prompt_length, length)
    return response_token_logps(logits, response_ids), logits, response_slice(values, prompt_length, length)


def make_rollout_targets(apply_fn, reference_apply_fn, settings, prompt_length: int):
    """`targets(params, reference_params, batch, kl_coef) -> batch + old_logps, ref_logps, old_values,
    advantages, returns, and rollout statistics`; `batch` holds input_ids, attention_mask, response_ids,
    response_mask [B, T] and scores [B]; `kl_coef` is this rollout's KL coefficient (an argument, not
    a constant, since the adaptive controller moves it between rollouts: `ppo.kl_control`)."""

    def targets(params, reference_params, batch, kl_coef):
        mask = batch["response_mask"].astype(jnp.float32)
        logps, _, values = policy_outputs(apply_fn, params, batch, prompt_length)
        ref_logits = reference_apply_fn(reference_params, batch["input_ids"], batch["attention_mask"])
        ref_logits = response_slice(ref_logits, prompt_length, batch["response_ids"].shape[1])
        ref_logps = response_token_logps(ref_logits, batch["response_ids"])
        logps, ref_logps, values = (jax.lax.stop_gradient(x) * mask for x in (logps, ref_logps, values))
        rewards, log_ratio = kl_penalised_rewards(batch["scores"], logps, ref_logps, mask, kl_coef=kl_coef)
        advantages, returns = generalized_advantages(
            rewards, values, mask, gamma=settings.gamma, lam=settings.lam
        )
        if settings.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        sequence_kl = jnp.sum(log_ratio, axis=-1)
        stats = {
            "rollout/score": jnp.mean(batch["scores"]),
            "rollout/kl": jnp.mean(sequence_kl),
            "rollout/objective": jnp.mean(batch["scores"] - kl_coef * sequence_kl),
            "ppo/kl_coef": jnp.asarray(kl_coef, jnp.float32),
            "rollout/response_length": jnp.mean(jnp.sum(mask, axis=-1)),
            "rollout/value_error": masked_mean(jnp.square(values - returns), mask),
            "rollout/return": masked_mean(returns, mask),
        }
        out = dict(batch, old_logps=logps, old_values=values, advantages=advantages, returns=returns)
        return out, stats

    return targets
