"""Win rates: order randomisation (an always-"A" judge gives ~50%), the counts, the bootstrap interval,
and a sweep that refuses to report when comparisons got no verdict. The judge is the openai judge
talking to the local chat-completions server."""

import numpy as np
import pytest

from dpo_jax.analysis.winrate import bootstrap_interval, judge_win_rate, order_coins
from dpo_jax.analysis.winrate_sweep import Contender, IncompleteJudging, win_rate_sweep
from dpo_jax.judges import JudgeError, OpenAIJudge
from dpo_jax.sampling.settings import SamplingSettings
from tests.judges.chat_server import KEY, MODEL, ChatServer

ALWAYS_A = "Comparison: the first one.\nPreferred: A"


def make_judge(server, tmp_path, **kwargs):
    options = dict(cache_path=tmp_path / "verdicts.jsonl", base_url=server.base_url, model=MODEL, api_key=KEY)
    return OpenAIJudge(**{**options, "backoff_s": 0.001, "timeout_s": 5.0, **kwargs})


def test_always_a_judge_gives_half(tmp_path):
    n = 200
    prompts = [f"post {i}" for i in range(n)]
    policy = [f"GOOD {i}" for i in range(n)]
    baseline = [f"weak {i}" for i in range(n)]
    with ChatServer(decide=lambda text: ALWAYS_A) as server:
        summary, records = judge_win_rate(make_judge(server, tmp_path), prompts, policy, baseline, seed=7)
    coins = order_coins(n, 7)
    # The policy wins exactly when the coin showed it as A: about half the time, not 100% or 0%.
    assert summary["win_rate"] == pytest.approx(coins.mean())
    assert 0.4 < summary["win_rate"] < 0.6
    assert summary["ci_low"] < 0.5 < summary["ci_high"]
    assert summary["position_a_rate"] == 1.0
    assert [r["policy_is_a"] for r in records] == coins.tolist()
    assert summary["wins"] + summary["losses"] == n == summary["n"]


def test_counts_ties_identical_and_unparsable(tmp_path):
    prompts = [f"post {i}" for i in range(12)]
    policy = [f"GOOD {i}" for i in range(12)]
    baseline = [f"weak {i}" if i < 8 else policy[i] for i in range(12)]  # 4 identical pairs

    def decide(text):
        if "post 0\n" in text or "post 1\n" in text:
            return "Both fine; no preference stated."
        if "post 2\n" in text:
            return "Comparison: equal.\nPreferred: tie"
        return "Comparison: x.\nPreferred: " + ("A" if "Summary A:\nGOOD" in text else "B")

    with ChatServer(decide=decide) as server:
        summary, records = judge_win_rate(make_judge(server, tmp_path), prompts, policy, baseline)
        assert server.requests == 8  # identical responses are not sent
        # Counted as losses instead (TRL's WinRateCallback): the same verdicts, from the cache.
        lost, lost_records = judge_win_rate(
            make_judge(server, tmp_path), prompts, policy, baseline, unparsable="loss"
        )
        assert server.requests == 8
    # "tie" is no answer the template offers: unparsable, as the replies that name no choice.
    assert summary["unparsable"] == 3 and summary["identical"] == 4 and summary["errors"] == 0
    assert summary["n"] == 9 and summary["wins"] == 5 and summary["ties"] == 4 and summary["losses"] == 0
    assert summary["win_rate"] == pytest.approx(7 / 9) and summary["unparsable_counted_as"] == "drop"
    assert records[0]["outcome"] is None and records[8]["choice"] == "identical"
    assert lost["unparsable"] == 3 and lost["n"] == 12 and lost["losses"] == 3 and lost["wins"] == 5
    assert lost["win_rate"] == pytest.approx(7 / 12) and lost_records[0]["outcome"] == 0.0


def test_a_judge_whose_every_reply_is_unparsable_is_an_error_and_a_retry_asks_again(tmp_path):
    prompts, policy, baseline = ["post 0", "post 1"], ["GOOD 0", "GOOD 1"], ["weak 0", "weak 1"]
    reply = {"text": "Both are summaries."}
    with ChatServer(decide=lambda text: reply["text"]) as server:
        with pytest.raises(
            JudgeError, match=f"judge {MODEL}: none of its 2 replies .* 'Both are summ"
        ):
            judge_win_rate(make_judge(server, tmp_path), prompts, policy, baseline)
        reply["text"] = ALWAYS_A
        # The unparsable replies are cached: a plain rerun asks nothing and fails the same way ...
        with pytest.raises(JudgeError, match="none of its 2 replies"):
            judge_win_rate(make_judge(server, tmp_path), prompts, policy, baseline)
        assert server.requests == 2
        # ... while retry_unparsable asks again, and the new replies are cached over the old ones.
        summary, _ = judge_win_rate(
            make_judge(server, tmp_path, retry_unparsable=True), prompts, policy, baseline
        )
        assert server.requests == 4 and summary["n"] == 2 and summary["unparsable"] == 0
        judge_win_rate(make_judge(server, tmp_path), prompts, policy, baseline)
        assert server.requests == 4
    assert len((tmp_path / "verdicts.jsonl").read_text().splitlines()) == 4  # the old replies are kept


def test_bootstrap_interval():
    assert bootstrap_interval(np.ones(50)) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_interval(np.array([]))))
    outcomes = (np.arange(400) % 2).astype(float)
    low, high = bootstrap_interval(outcomes, seed=1)
    half_width = 1.96 * 0.5 / np.sqrt(400)  # the normal approximation for a fair coin
    assert low == pytest.approx(0.5 - half_width, abs=0.01) and high == pytest.approx(
        0.5 + half_width, abs=0.01
    )


def test_sweep_refuses_a_partial_result(tmp_path):
    texts = Contender("fixed", texts=["GOOD a", "GOOD b"])
    other = Contender("other", texts=["weak a", "weak b"])
    with ChatServer(faults=lambda text, attempt: "500" if "post 1" in text else None) as server:
        judge = make_judge(server, tmp_path, max_retries=1)
        with pytest.raises(IncompleteJudging, match="1 of 2 comparisons at temperature 0 got no verdict"):
            win_rate_sweep(judge, None, ["post 0", "post 1"], texts, other, [0.0], settings=SamplingSettings(max_new_tokens=4))
        assert server.requests == 1 + 2
    # The verdict that was obtained is cached: a rerun would ask only for the missing one.
    assert len((tmp_path / "verdicts.jsonl").read_text().splitlines()) == 1
