"""Win rates across sampling temperatures: policy completions against a baseline's, judged.

A side of the comparison (`Contender`) is one of:
  * a model sampled once per prompt at the temperature (the policy, the reference, another run);
  * Best-of-N (the DPO paper's baseline, best_of_n.py): N samples of a model per prompt at the
    temperature, the one a reward model scores highest kept;
  * fixed texts (the dataset's preferred response or human summary), the same at every temperature.
Policy and baseline are sampled with different seeds, so two copies of one model are two independent
samples (and win half the time in expectation), not the same text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from dpo_jax.analysis.best_of_n import select_best_of_n
from dpo_jax.analysis.winrate import judge_win_rate
from dpo_jax.sampling.batched import MeshSampler
from dpo_jax.sampling.prompts import sample_policy
from dpo_jax.sampling.settings import SamplingSettings
from dpo_jax.sampling.sharded import decode_placement, default_mesh
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES


class IncompleteJudging(RuntimeError):
    """Some comparisons got no verdict after every retry: the win rate would be a partial result."""


@dataclasses.dataclass(frozen=True)
class Contender:
    label: str
    model: Any = None
    params: Any = None
    texts: Sequence[str] | None = None  # fixed responses instead of a model
    best_of: int = 1  # > 1: Best-of-N with `reward_judge`
    reward_judge: Any = None
    prompt_format: Any = None  # prompt -> what the model is asked (a prompting baseline's template)
    placement: Any = None  # the model's `decode_placement` on the default mesh (`placed()`)

    def __post_init__(self):
        if (self.texts is None) == (self.model is None):
            raise ValueError(f"contender {self.label!r} needs a model or fixed texts, not both or neither")
        if self.best_of < 1 or (self.best_of > 1 and self.reward_judge is None):
            raise ValueError(
                f"contender {self.label!r}: best_of={self.best_of} needs best_of >= 1 and a reward judge"
            )

    def placed(self) -> Contender:
        """This contender with its model's decode placement worked out, once for a sweep rather than at
        every temperature. The params still go onto the devices per sampling call and leave them after
        it, so a sweep never holds two models' params in device memory at once."""
        if self.model is None or self.placement is not None:
            return self
        placement = decode_placement(self.model, default_mesh(), DEFAULT_LOGICAL_AXIS_RULES)
        return dataclasses.replace(self, placement=placement)

    def completions(
        self, tokenizer, prompts: Sequence[str], *, settings: SamplingSettings, batch_size: int, seed: int
    ) -> list[str]:
        if self.texts is not None:
            return list(self.texts)
        asked = [self.prompt_format(p) for p in prompts] if self.prompt_format else list(prompts)
        params = self.params
        if self.placement is not None and not isinstance(params, MeshSampler):
            params = MeshSampler.create(self.model, params, placement=self.placement)
        samples = sample_policy(
            self.model,
            params,
            tokenizer,
            asked,
            settings=settings,
            num_samples=self.best_of,
            batch_size=batch_size,
            seed=seed,
        )
        if self.best_of == 1:
            return samples.texts
        return [samples.texts[r] for r in select_best_of_n(self.reward_judge, prompts, samples, self.best_of)]


def win_rate_sweep(
    judge,
    tokenizer,
    prompts: Sequence[str],
    policy: Contender,
    baseline: Contender,
    temperatures: Sequence[float],
    *,
    settings: SamplingSettings,
    batch_size: int = 16,
    seed: int = 0,
    unparsable: str = "drop",
    baseline_temperature: float | None = None,
    on_result: Callable[[float, dict], None] | None = None,
) -> list[tuple[dict, list[dict]]]:
    """[(summary, comparison records)] per temperature, sampled with `settings` at that temperature;
    summaries carry "temperature". `unparsable`: "drop" or "loss", what an unreadable verdict counts as
    (analysis/winrate.py). A sampled baseline is drawn at `baseline_temperature` when given (the paper's
    judge table: each method at its temperature against PPO at temperature 0), else at the policy's.

    Raises IncompleteJudging if any comparison has no verdict after the judge's retries (the verdicts
    obtained are in the judge's cache; a rerun asks only for the missing ones).
    """
    results = []
    policy, baseline = policy.placed(), baseline.placed()
    for index, temperature in enumerate(temperatures):
        options = dict(settings=settings.replace(temperature=temperature), batch_size=batch_size)
        policy_texts = policy.completions(tokenizer, prompts, seed=2 * seed, **options)
        if baseline_temperature is not None:
            options = dict(settings=settings.replace(temperature=baseline_temperature), batch_size=batch_size)
        baseline_texts = baseline.completions(tokenizer, prompts, seed=2 * seed + 1, **options)
        summary, records = judge_win_rate(
            judge, prompts, policy_texts, baseline_texts, seed=seed + index, unparsable=unparsable
        )
        if summary["errors"]:
            raise IncompleteJudging(
                f"{summary['errors']} of {len(prompts)} comparisons at temperature {temperature:g} got no "
                f"verdict after retries (first: {next(r['error'] for r in records if 'error' in r)}); "
                "rerun to ask again for those only: every verdict obtained is cached"
            )
        summary = {"temperature": float(temperature), **summary}
        if baseline_temperature is not None and baseline.texts is None:
            summary["baseline_temperature"] = float(baseline_temperature)
        if on_result is not None:
            on_result(float(temperature), summary)
        results.append((summary, records))
    return results
