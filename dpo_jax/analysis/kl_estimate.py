"""Monte Carlo estimates from sampled completions: KL(pi || pi_ref) and the expected reward.

With y ~ pi(.|x) for prompts x drawn uniformly from a prompt set,
    KL = E_x E_{y~pi}[log pi(y|x) - log pi_ref(y|x)],   reward = E_x E_{y~pi}[r(x, y)],
each estimated by the mean over all samples. Several samples of one prompt are not independent draws
of (x, y), so the standard error treats prompts as clusters: the standard deviation of the per-prompt
means over sqrt(number of prompts). With one sample per prompt it is the usual s / sqrt(n).

The samples must come from pi itself (temperature 1, no top-k / top-p): otherwise the mean of the log
ratio estimates nothing in particular. When generation stops at max_new_tokens before EOS, the KL is
that of the distributions over the first max_new_tokens tokens, a lower bound on the full KL.
"""

from __future__ import annotations

import numpy as np


def clustered_mean(values: np.ndarray, prompt_index: np.ndarray) -> dict[str, float]:
    """{"mean", "stderr", "num_samples", "num_prompts"} of per-sample values grouped by prompt.

    Every prompt must contribute the same number of samples (then the overall mean equals the mean of
    the per-prompt means, the estimand's uniform weighting over prompts).
    """
    values = np.asarray(values, np.float64)
    prompt_index = np.asarray(prompt_index)
    if values.shape != prompt_index.shape or values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"need matching non-empty 1-d values and prompt_index, got {values.shape}, {prompt_index.shape}"
        )
    prompts, counts = np.unique(prompt_index, return_counts=True)
    if len(set(counts.tolist())) != 1:
        raise ValueError(f"prompts have unequal numbers of samples ({sorted(set(counts.tolist()))})")
    per_prompt = np.bincount(np.searchsorted(prompts, prompt_index), weights=values) / counts
    stderr = float(np.std(per_prompt, ddof=1) / np.sqrt(len(prompts))) if len(prompts) > 1 else float("nan")
    return {
        "mean": float(np.mean(values)),
        "stderr": stderr,
        "num_samples": int(values.size),
        "num_prompts": int(len(prompts)),
    }


def kl_estimate(
    policy_logps: np.ndarray, reference_logps: np.ndarray, prompt_index: np.ndarray
) -> dict[str, float]:
    """{"kl", "kl_stderr", ...}: the mean log ratio of completions sampled from the policy."""
    policy_logps, reference_logps = (
        np.asarray(policy_logps, np.float64),
        np.asarray(reference_logps, np.float64),
    )
    if policy_logps.shape != reference_logps.shape:
        raise ValueError(
            f"policy logps {policy_logps.shape} and reference logps {reference_logps.shape} differ"
        )
    stats = clustered_mean(policy_logps - reference_logps, prompt_index)
    return {
        "kl": stats["mean"],
        "kl_stderr": stats["stderr"],
        "num_samples": stats["num_samples"],
        "num_prompts": stats["num_prompts"],
    }
