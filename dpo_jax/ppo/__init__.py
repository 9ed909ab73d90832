"""PPO, the RLHF step the DPO paper compares with: rollouts with the KV cache, a KL-penalised reward from a
reward model, a Hugging Face classifier (PPO-GT) or a reward function, a fixed or adaptive KL coefficient
(`kl_control`), GAE and clipped policy / value updates, sharded and exactly resumable.

    from dpo_jax.ppo import run_ppo
    run_ppo(config, workdir, prompt_ids, prompt_mask, reward, eos_id=..., pad_id=...)  # reward: a RewardFn
    run_ppo_stage(config, workdir)   # `stage=ppo`: the dataset's prompts, config.ppo.reward_model
"""

from dpo_jax.ppo.loop import PPOResult, run_ppo, run_ppo_stage
from dpo_jax.ppo.rewards import RewardFn, reward_model_fn

__all__ = ["PPOResult", "RewardFn", "reward_model_fn", "run_ppo", "run_ppo_stage"]
