"""One point of the reward-vs-KL frontier: a policy's expected reward and KL(pi || pi_ref), from samples.

For each prompt (an IMDb review prefix), `num_samples` completions are sampled from the policy at
temperature 1 (so they are draws from pi itself), scored by the reward (a sentiment classifier's
p(positive) of prefix + completion), and scored under the reference by teacher forcing. Both means come
with standard errors that treat prompts as clusters (kl_estimate.py).

Best-of-N points (best_of_n.py) are the reference's: `num_samples` Best-of-N picks per prompt, each the
best of N samples by a learned reward model (the selector, not the classifier that measures the
reward), so num_samples * N samples per prompt. Their reward is measured like any policy's; their KL is
the analytic bound log N - (N - 1) / N ("kl_kind": "analytic_bound", "kl_stderr" 0: a function of N,
with no sampling error), not a sample estimate ("kl_kind": "sampled" on every other point).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dpo_jax import UserError
from dpo_jax.analysis.best_of_n import best_of_n_kl, select_best_of_n
from dpo_jax.analysis.kl_estimate import clustered_mean, kl_estimate
from dpo_jax.analysis.over_training import run_policies
from dpo_jax.analysis.runs import RunInfo, load_policy, read_run
from dpo_jax.analysis.teacher_forcing import score_completions
from dpo_jax.sampling.prompts import sample_policy
from dpo_jax.sampling.settings import SamplingSettings

# Draws from pi itself, as the KL estimate needs; a command changes only max_new_tokens.
FRONTIER_SAMPLING = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=48)


def reward_and_kl(
    policy,
    reference,
    tokenizer,
    prompts: Sequence[str],
    reward_judge,
    *,
    num_samples: int = 4,
    settings: SamplingSettings = FRONTIER_SAMPLING,
    batch_size: int = 16,
    seed: int = 0,
) -> dict:
    """{"reward", "reward_stderr", "kl", "kl_stderr", "kl_kind", "num_samples", "num_prompts"}.

    policy, reference: (model, params) pairs; the reference scores the policy's samples, so both must
    share the tokenizer. reward_judge: a ScoringJudge (e.g. judges.ClassifierJudge). settings: how many
    tokens to sample (`max_new_tokens`); the rest must draw from pi itself (`check_draws_from_policy`).
    """
    reference_model, reference_params = reference
    samples = _sample(policy, tokenizer, prompts, num_samples, settings, batch_size, seed)
    reference_logps = score_completions(reference_model, reference_params, samples, batch_size=batch_size)
    rows = np.arange(len(samples.texts))
    return {
        **_reward(reward_judge, prompts, samples, rows),
        **kl_estimate(samples.logps, reference_logps, samples.prompt_index),
        "kl_kind": "sampled",
    }


def best_of_n_reward(
    policy,
    tokenizer,
    prompts: Sequence[str],
    reward_judge,
    selector,
    best_of: Sequence[int],
    *,
    num_samples: int = 4,
    settings: SamplingSettings = FRONTIER_SAMPLING,
    batch_size: int = 16,
    seed: int = 0,
) -> list[dict]:
    """One stats dict per N in `best_of` (as reward_and_kl's, with "best_of"): `num_samples` Best-of-N
    picks per prompt by the `selector` judge (a learned reward model), their reward by `reward_judge`,
    the KL the analytic bound. The Ns share one draw of num_samples * max(N) samples per prompt: each N
    uses the first num_samples * N of a prompt's samples (so the points are correlated, each unbiased)."""
    if any(n < 2 for n in best_of):
        raise ValueError(f"Best-of-N needs N >= 2 (N=1 is the policy itself), got {list(best_of)}")
    per_prompt = num_samples * max(best_of, default=0)
    if not per_prompt:
        return []
    samples = _sample(policy, tokenizer, prompts, per_prompt, settings, batch_size, seed)
    out = []
    for n in best_of:
        candidates = (np.arange(len(prompts))[:, None] * per_prompt + np.arange(num_samples * n)).ravel()
        kept = select_best_of_n(selector, prompts, samples, n, rows=candidates)
        out.append(
            {
                "best_of": n,
                **_reward(reward_judge, prompts, samples, kept),
                "kl": best_of_n_kl(n),
                "kl_stderr": 0.0,
                "kl_kind": "analytic_bound",
            }
        )
    return out


def check_draws_from_policy(settings: SamplingSettings) -> None:
    """The KL estimate is a mean of log pi - log pi_ref over draws from pi itself: temperature 1, no
    top-k or top-p filtering (kl_estimate.py)."""
    if (settings.temperature, settings.top_k, settings.top_p) != (1.0, 0, 1.0):
        raise UserError(
            f"the frontier samples pi itself (temperature 1, top_k 0, top_p 1), not {settings}: "
            "the KL estimate would estimate nothing in particular"
        )


def _sample(policy, tokenizer, prompts, num_samples, settings, batch_size, seed):
    check_draws_from_policy(settings)
    model, params = policy
    return sample_policy(
        model,
        params,
        tokenizer,
        list(prompts),
        settings=settings,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
    )


def _reward(reward_judge, prompts, samples, rows) -> dict:
    """The reward judge's clustered mean (prompts as clusters) over the samples' `rows`."""
    prompt_of = samples.prompt_index[rows]
    scores = reward_judge.score([prompts[i] for i in prompt_of], [samples.texts[r] for r in rows])
    reward = clustered_mean(np.asarray(scores, np.float64), prompt_of)
    return {
        "reward": reward["mean"],
        "reward_stderr": reward["stderr"],
        "num_samples": reward["num_samples"],
        "num_prompts": reward["num_prompts"],
    }


def frontier_points(
    runs: Sequence[RunInfo],
    prompts: Sequence[str],
    reward_judge,
    *,
    checkpoints_every: int | None = None,
    reference_points: bool = True,
    best_of: Sequence[int] = (),
    best_of_selector=None,
    dtype: str = "float32",
    on_point: Callable[[dict], None] = lambda point: None,
    **options,
) -> list[dict]:
    """The frontier's points: each distinct reference at KL 0 (unless `reference_points` is False) and
    its Best-of-N for each N in `best_of` (selected by the `best_of_selector` judge), then each run's
    policy (its export, or one point per checkpoint at multiples of `checkpoints_every`, each with its
    "step"), labelled with the run's method and sweep parameter (methods.py). A checkpoint that does
    not read is a point with its "error" and no numbers. `options`: those of reward_and_kl."""
    if best_of and best_of_selector is None:
        raise ValueError("Best-of-N points need a selector (a reward model judge)")
    from dpo_jax.data import load_tokenizer

    points, references = [], {}

    def add(point):
        on_point(point)
        points.append(point)

    def add_reference(path, reference):
        """The reference's own point at KL 0 and its Best-of-N points."""
        if not (reference_points or best_of):
            return
        reference_run = read_run(path)
        tokenizer = load_tokenizer(reference_run.tokenizer_path())
        if reference_points:
            stats = reward_and_kl(reference, reference, tokenizer, prompts, reward_judge, **options)
            add({"run": path, "method": "reference", "parameter": None, **stats})
        for stats in best_of_n_reward(
            reference, tokenizer, prompts, reward_judge, best_of_selector, best_of, **options
        ):
            add({"run": path, **reference_run.method(best_of=stats.pop("best_of")).as_dict(), **stats})

    for run in runs:
        reference_path = run.reference_path
        if reference_path not in references:
            references[reference_path] = load_policy(reference_path, dtype=dtype)
            add_reference(reference_path, references[reference_path])
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
