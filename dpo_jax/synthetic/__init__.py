"""A synthetic preference task with an exactly known RLHF optimum, and its exact evaluation.

It is the project's end-to-end check that DPO optimises the KL-constrained reward objective: small
enough to enumerate every completion, so a trained policy's reward and KL to the reference, and the
optimal reward at that KL, are sums rather than estimates.

    task = SyntheticTask(vocab_size=8, prompt_length=4, response_length=4, seed=0)
    prompts = task.sample_prompts(64, rng)
    logp_ref = completion_logprobs(apply_fn, sft_params, prompts, task.all_completions(), batch_size=4096)
    reward = task.reward(prompts, task.all_completions())
    chosen, rejected, prompt_index = task.sample_pairs(prompts, logp_ref, rng, pairs_per_prompt=8)
    ... train ...
    stats = policy_stats(logp_policy, logp_ref, reward)
    best = optimum_reward_at_kl(logp_ref, reward, stats["kl"])
"""

from dpo_jax.synthetic.exact import (
    completion_logprobs,
    frontier,
    gain_ratio,
    log_normalise,
    optimal_logprobs,
    optimum_reward_at_kl,
    policy_stats,
)
from dpo_jax.synthetic.plot import plot_frontier
from dpo_jax.synthetic.task import SyntheticTask

__all__ = [
    "SyntheticTask",
    "completion_logprobs",
    "frontier",
    "gain_ratio",
    "log_normalise",
    "optimal_logprobs",
    "optimum_reward_at_kl",
    "plot_frontier",
    "policy_stats",
]
