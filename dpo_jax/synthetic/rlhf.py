"""The classic RLHF baselines of the synthetic experiment, beside DPO on the same pairs and prompts.

  * `reward_model`: a scalar-head GPT-2 from pi_ref's body, trained with Bradley-Terry on the SAME
    preference pairs as DPO (beside SFT and the pairs: it does not depend on beta);
  * PPO from pi_ref on the pair prompts, with the learned reward model and with the task's true
    reward, one stage per KL coefficient (`synthetic.ppo_kl_coefs`): the sweep traces each curve;
  * best-of-N from pi_ref ranked by the learned reward model, exactly (`best_of_n.py`), for every N of
    `synthetic.best_of_n`.
Every resulting policy is evaluated exactly like DPO's: E[r] under the TRUE reward, KL to pi_ref, the
optimum's reward at that KL and the gain ratio.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.models.loading import resolve_model_path
from dpo_jax.models.reward import from_hf_reward_model
from dpo_jax.ppo import run_ppo
from dpo_jax.run import Preempted
from dpo_jax.synthetic.best_of_n import best_of_n_logprobs
from dpo_jax.synthetic.exact import method_stats
from dpo_jax.synthetic.stages import stage_config, train_stage

REWARD_MODEL = "reward_model"
PPO_REWARDS = ("true", "learned")  # the task's hidden reward, the learned reward model


def _parse(text: str, kind):
    return [kind(item.strip()) for item in str(text).split(",") if item.strip()]


def ppo_runs(settings) -> list[tuple[str, float]]:
    """(reward, kl_coef) of every PPO stage this run asks for."""
    coefs = _parse(settings.ppo_kl_coefs, float)
    rewards = _parse(settings.ppo_rewards, str)
    unknown = sorted(set(rewards) - set(PPO_REWARDS))
    if unknown:
        raise ValueError(f"config.synthetic.ppo_rewards: unknown {unknown}; known: {list(PPO_REWARDS)}")
    if any(not c >= 0 for c in coefs) or len(set(coefs)) != len(coefs):
        raise ValueError(
            f"config.synthetic.ppo_kl_coefs={settings.ppo_kl_coefs!r}: need distinct values >= 0"
        )
    # Both rewards at one coefficient before the next: an interrupted sweep still compares them.
    return [(reward, coef) for coef in coefs for reward in rewards]


def best_of_n_sizes(settings) -> list[int]:
    sizes = _parse(settings.best_of_n, int)
    if any(n < 1 for n in sizes):
        raise ValueError(f"config.synthetic.best_of_n={settings.best_of_n!r}: every N must be >= 1")
    return sizes


def needs_reward_model(settings) -> bool:
    return bool(best_of_n_sizes(settings)) or any(reward == "learned" for reward, _ in ppo_runs(settings))


def ppo_stage_name(reward: str, kl_coef: float) -> str:
    return f"ppo_{reward}_reward_kl_{kl_coef!r}"


def train_reward_model(config, sft_dir: str, make_pairs, workdir: str) -> float:
    """The reward model from pi_ref's body on DPO's pairs (`make_pairs()`), in `workdir`."""
    cfg = stage_config(
        config,
        stage=REWARD_MODEL,
        loss="bradley_terry",
        init=str(sft_dir),
        overrides=config.synthetic.reward_model,
    )
    return train_stage(cfg, Path(workdir), make_pairs)


def train_ppo(
    config, task, prompts: np.ndarray, sft_dir: str, workdir: str, *, reward: str, kl_coef: float,
    reward_model_dir: str = "",
) -> float:  # fmt: skip
    """One PPO stage from pi_ref on `prompts` [N, P] in `workdir`, with the task's true reward or the
    reward model in `reward_model_dir`; every response has the task's T tokens (no EOS)."""
    if reward not in PPO_REWARDS or (reward == "learned") != bool(reward_model_dir):
        raise ValueError(f"PPO with the {reward!r} reward needs a reward model exactly when it is learned")
    cfg = stage_config(
        config, stage="ppo", loss=config.loss, init=str(sft_dir), overrides=config.synthetic.ppo
    )
    with cfg.unlocked():
        cfg.ppo.kl_coef = kl_coef
        cfg.ppo.max_new_tokens = task.response_length
        cfg.ppo.reward_model = str(reward_model_dir) if reward == "learned" else ""
    stage_dir = Path(workdir)

    def true_reward(prompt_ids, prompt_mask, response_ids, response_mask):
        del prompt_mask, response_mask  # fixed lengths: every token is real
        return task.paired_reward(prompt_ids, response_ids).astype(np.float32)

    def run():
        reward_fn = true_reward if reward == "true" else None  # None: the config's reward model
        result = run_ppo(
            cfg, str(stage_dir), prompts, np.ones_like(prompts), reward_fn, eos_id=None, pad_id=0
        )
        if result.preempted:
            raise Preempted(f"stage {stage_dir.name} was preempted; rerun to resume")

    return train_stage(cfg, stage_dir, None, run=run)


@functools.partial(jax.jit, static_argnames="model")
def _last_token_scores(model, params, prompts, completions, rows):
    num_completions = completions.shape[0]
    ids = jnp.concatenate([prompts[rows // num_completions], completions[rows % num_completions]], axis=1)
    # Unpadded sequences: the last real token is the last column.
    return model.apply({"params": params}, ids, jnp.ones_like(ids))[:, -1]


def reward_model_table(stage_dir: Path, task, prompts: np.ndarray, *, batch_size: int) -> np.ndarray:
    """[N, C] float64 learned reward of every completion of every prompt, in `all_completions()` order."""
    model, params = from_hf_reward_model(resolve_model_path(str(stage_dir)))
    prompts_j, completions = jnp.asarray(prompts, jnp.int32), jnp.asarray(task.all_completions())
    total = len(prompts) * task.num_completions
    chunks = [
        _last_token_scores(
            model, params, prompts_j, completions, jnp.asarray(np.arange(start, start + batch_size) % total)
        )
        for start in range(0, total, batch_size)
    ]
    flat = np.concatenate([np.asarray(chunk, np.float64) for chunk in chunks])[:total]
    return flat.reshape(len(prompts), task.num_completions)


def pair_accuracy(table: np.ndarray, task, prompt_index, chosen, rejected) -> float:
    """Fraction of pairs whose chosen response the table scores strictly higher."""
    rows = np.asarray(prompt_index)
    better = table[rows, task.completion_index(chosen)] > table[rows, task.completion_index(rejected)]
    return float(np.mean(better))


def evaluate_rlhf(task, logp_ref, reward, *, proxy_table, ppo_logps: dict, sizes, pairs) -> dict:
    """The RLHF baselines' part of the evaluation record (see the module docstring)."""
    result = {}
    if proxy_table is not None:
        args = (pairs.eval_prompt_index, pairs.eval_chosen, pairs.eval_rejected)
        result[REWARD_MODEL] = {
            "eval_pair_accuracy": pair_accuracy(proxy_table, task, *args),
            # The same pairs judged by the true reward: the accuracy a perfect reward model would reach
            # in expectation is below 1, since Bradley-Terry labels are noisy.
            "true_reward_pair_accuracy": pair_accuracy(reward, task, *args),
        }
        result["best_of_n"] = [
            {"n": n, **method_stats(best_of_n_logprobs(logp_ref, proxy_table, n), logp_ref, reward)}
            for n in sizes
        ]
    for name in PPO_REWARDS:
        points = [
            {"kl_coef": coef, **method_stats(logp, logp_ref, reward)}
            for (kind, coef), logp in sorted(ppo_logps.items())
            if kind == name
        ]
        if points:
            result[f"ppo_{name}_reward"] = points
    return result
