"""One point of the reward-vs-KL frontier: a policy's expected reward and KL(pi || pi_ref), from samples.

For each prompt (an IMDb review prefix), `num_samples` completions are sampled from the policy at
temperature 1 (so they are draws from pi itself), scored by the reward (a sentiment classifier's
p(positive) of prefix + completion), and scored under the reference by teacher forcing. Both means come
with standard errors that treat prompts as clusters (kl_estimate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dpo_jax.analysis.kl_estimate import clustered_mean, kl_estimate
from dpo_jax.analysis.over_training import run_policies
from dpo_jax.analysis.runs import RunInfo, load_policy, read_run
from dpo_jax.analysis.teacher_forcing import score_completions
from dpo_jax.sampling.prompts import sample_policy


def reward_and_kl(
    policy,
    reference,
    tokenizer,
    prompts: Sequence[str],
    reward_judge,
    *,
    num_samples: int = 4,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    seed: int = 0,
) -> dict:
    """{"reward", "reward_stderr", "kl", "kl_stderr", "num_samples", "num_prompts"}.

    policy, reference: (model, params) pairs; the reference scores the policy's samples, so both must
    share the tokenizer. reward_judge: a ScoringJudge (e.g. judges.ClassifierJudge).
    """
    policy_model, policy_params = policy
    reference_model, reference_params = reference
    settings = dict(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens)
    samples = sample_policy(
        policy_model,
        policy_params,
        tokenizer,
        list(prompts),
        settings=settings,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
    )
    reference_logps = score_completions(reference_model, reference_params, samples, batch_size=batch_size)
    prompt_per_row = [prompts[i] for i in samples.prompt_index]
    rewards = np.asarray(reward_judge.score(prompt_per_row, samples.texts), np.float64)
    reward = clustered_mean(rewards, samples.prompt_index)
    return {
        "reward": reward["mean"],
        "reward_stderr": reward["stderr"],
        **kl_estimate(samples.logps, reference_logps, samples.prompt_index),
    }


def frontier_points(
    runs: Sequence[RunInfo],
    prompts: Sequence[str],
    reward_judge,
    *,
    checkpoints_every: int | None = None,
    reference_points: bool = True,
    dtype: str = "float32",
    on_point: Callable[[dict], None] = lambda point: None,
    **options,
) -> list[dict]:
    """The frontier's points: each distinct reference at KL 0 (unless `reference_points` is False), then
    each run's policy (its export, or one point per checkpoint at multiples of `checkpoints_every`,
    each with its "step"), labelled with the run's method and sweep parameter (methods.py). A checkpoint
    that does not read is a point with its "error" and no numbers. `options`: those of reward_and_kl."""
    from dpo_jax.data import load_tokenizer

    points, references = [], {}

    def add(point):
        on_point(point)
        points.append(point)

    for run in runs:
        reference_path = run.reference_path
        if reference_path not in references:
            references[reference_path] = reference = load_policy(reference_path, dtype=dtype)
            if reference_points:
                tokenizer = load_tokenizer(read_run(reference_path).tokenizer_path())
                stats = reward_and_kl(reference, reference, tokenizer, prompts, reward_judge, **options)
                add({"run": reference_path, "method": "reference", "parameter": None, **stats})
        tokenizer = load_tokenizer(run.tokenizer_path())
        for step, policy, error in run_policies(run, checkpoints_every, dtype=dtype):
            point = {"run": run.path, **run.method().as_dict()}
            if step is not None:
                point["step"] = step
            if policy is None:
                add({**point, "error": error})
                continue
            stats = reward_and_kl(
                policy, references[reference_path], tokenizer, prompts, reward_judge, **options
            )
            add({**point, **stats})
    return points
