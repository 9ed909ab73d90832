"""PPO, the RLHF step the DPO paper compares with: rollouts with the KV cache, a KL-penalised reward from a
reward model or a reward function, GAE and clipped policy / value updates, sharded and exactly resumable.

    from dpo_jax.ppo import run_ppo
    run_ppo(config, workdir, prompts, reward)      # prompts: [N, P] left padded + mask; reward: a RewardFn
"""

from dpo_jax.ppo.loop import PPOResult, run_ppo
from dpo_jax.ppo.rewards import RewardFn, reward_model_fn

__all__ = ["PPOResult", "RewardFn", "reward_model_fn", "run_ppo"]
