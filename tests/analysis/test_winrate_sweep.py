"""The sides of a win-rate comparison on a tiny random model: Best-of-N keeps the reward model's best of N
samples, policy and baseline draw independent samples, and greedy copies of one model tie without a judge."""

import numpy as np
import pytest

from dpo_jax.analysis.winrate_sweep import Contender, win_rate_sweep
from dpo_jax.data import load_tokenizer
from dpo_jax.judges import Judge, ScoringJudge
from dpo_jax.sampling.prompts import sample_policy
from dpo_jax.sampling.settings import SamplingSettings
from tests.synthetic.tiny_models import tiny_lm

PROMPTS = ["the movie was", "I think that", "a", "Human: hi\n\nAssistant:"]
SETTINGS = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8)


class LengthReward(ScoringJudge):
    name = "length"

    def score(self, prompts, responses):
        return np.array([len(r) for r in responses], np.float64)


class NeverAsked(Judge):
    name = "never"

    def judge(self, comparisons):
        assert not comparisons, "identical responses must not reach the judge"
        return []


@pytest.fixture(scope="module")
def model():
    return tiny_lm("gpt2", 512, std=0.5, max_positions=64)


def test_best_of_n_keeps_the_highest_reward(model):
    tokenizer = load_tokenizer("tiny")
    best = Contender("bo4", *model, best_of=4, reward_judge=LengthReward())
    chosen = best.completions(tokenizer, PROMPTS, settings=SETTINGS, batch_size=8, seed=3)
    candidates = sample_policy(
        *model, tokenizer, PROMPTS, settings=SETTINGS, num_samples=4, batch_size=8, seed=3
    )
    groups = candidates.per_prompt()
    assert chosen == [texts[int(np.argmax([len(t) for t in texts]))] for texts in groups]
    assert any(len(set(texts)) > 1 for texts in groups)  # there was a choice to make
    single = Contender("one", *model).completions(tokenizer, PROMPTS, settings=SETTINGS, batch_size=8, seed=3)
    assert single == sample_policy(*model, tokenizer, PROMPTS, settings=SETTINGS, batch_size=8, seed=3).texts


def test_two_copies_of_a_model_sample_independently_and_greedy_copies_tie(model):
    tokenizer = load_tokenizer("tiny")
    policy, baseline = Contender("a", *model), Contender("b", *model)
    ((summary, records),) = win_rate_sweep(
        NeverAsked(), tokenizer, PROMPTS, policy, baseline, [0.0], settings=SETTINGS, batch_size=4
    )
    assert (
        summary["identical"] == len(PROMPTS) and summary["win_rate"] == 0.5 and summary["temperature"] == 0.0
    )
    texts = {
        name: side.completions(tokenizer, PROMPTS, settings=SETTINGS, batch_size=4, seed=seed)
        for name, side, seed in (("policy", policy, 0), ("baseline", baseline, 1))
    }
    assert texts["policy"] != texts["baseline"]  # the sweep's seeds 2s and 2s+1: independent samples


def test_a_contender_is_a_model_or_texts():
    with pytest.raises(ValueError, match="needs a model or fixed texts"):
        Contender("none")
    with pytest.raises(ValueError, match="best_of=3 needs"):
        Contender("bo3", model="m", params={}, best_of=3)


def test_a_baseline_at_its_own_temperature_and_a_prompting_template(model, tmp_path):
    """Issue 28 item 6: the paper's judge table compares a method at temperature T with PPO at 0
    (`baseline_temperature`); item 5: a prompting baseline asks its model through a template (the judge
    sees the dataset's prompt)."""
    from dpo_jax.analysis.prompting import load_template

    tokenizer = load_tokenizer("tiny")
    greedy = sample_policy(*model, tokenizer, PROMPTS, settings=SETTINGS.replace(temperature=0.0), batch_size=4, seed=1)
    policy, baseline = Contender("a", *model), Contender("b", *model)
    ((summary, records),) = win_rate_sweep(
        LengthJudge(), tokenizer, PROMPTS, policy, baseline, [1.0], settings=SETTINGS, batch_size=4,
        baseline_temperature=0.0,
    )
    assert summary["temperature"] == 1.0 and summary["baseline_temperature"] == 0.0
    assert [r["baseline"] for r in records] == greedy.texts  # the baseline greedy, the policy sampled
    assert [r["policy"] for r in records] != greedy.texts
    template = tmp_path / "zero_shot.txt"
    template.write_text("Answer briefly.\n{prompt}")
    prompting = Contender("p", *model, prompt_format=load_template(str(template)))
    asked = prompting.completions(tokenizer, PROMPTS, settings=SETTINGS.replace(temperature=0.0), batch_size=4, seed=1)
    plain = [f"Answer briefly.\n{p}" for p in PROMPTS]
    assert asked == sample_policy(
        *model, tokenizer, plain, settings=SETTINGS.replace(temperature=0.0), batch_size=4, seed=1
    ).texts


class LengthJudge(Judge):
    """Prefers the longer response (A on a tie)."""

    name = "longer"

    def judge(self, comparisons):
        from dpo_jax.judges import Verdict

        return [Verdict("A" if len(c.response_a) >= len(c.response_b) else "B") for c in comparisons]


def test_a_sweep_works_out_each_models_placement_once(model, monkeypatch):
    """Over three temperatures, the policy's and the baseline's decode placements are made once each (not
    once per temperature), and the completions are those each temperature gives on its own."""
    import dpo_jax.analysis.winrate_sweep as sweep_module

    tokenizer = load_tokenizer("tiny")
    made = []
    placement = sweep_module.decode_placement
    monkeypatch.setattr(sweep_module, "decode_placement", lambda *a: (made.append(1), placement(*a))[1])
    policy, baseline = Contender("a", *model), Contender("b", *model)
    temperatures = [0.0, 0.5, 1.0]
    results = win_rate_sweep(
        LengthJudge(), tokenizer, PROMPTS, policy, baseline, temperatures, settings=SETTINGS, batch_size=4
    )
    assert len(made) == 2
    for temperature, (summary, records) in zip(temperatures, results):
        assert summary["temperature"] == temperature
        settings = SETTINGS.replace(temperature=temperature)
        assert [r["policy"] for r in records] == policy.completions(
            tokenizer, PROMPTS, settings=settings, batch_size=4, seed=0
        )
        assert [r["baseline"] for r in records] == baseline.completions(
            tokenizer, PROMPTS, settings=settings, batch_size=4, seed=1
        )
