"""The openai judge against a real HTTP server on 127.0.0.1 speaking chat completions: verdicts,
retries on 429 / 500 / timeouts / unreadable bodies, unparsable replies, the on-disk cache (a second
run sends nothing), usage and cost, the concurrency limit, and the fatal errors."""

import re
import time

import pytest

from dpo_jax.judges import Comparison, JudgeError, OpenAIJudge, parse_choice
from tests.judges.chat_server import KEY, MODEL, ChatServer, prefers_good

FAST = dict(backoff_s=0.001, max_backoff_s=0.01, timeout_s=0.3, model=MODEL, api_key=KEY)


def comparisons(n: int) -> list[Comparison]:
    """Comparison i shows the GOOD response as A when i is even."""
    out = []
    for i in range(n):
        good, bad = f"GOOD summary {i}", f"weak summary {i}"
        out.append(Comparison(f"post {i}", *((good, bad) if i % 2 == 0 else (bad, good))))
    return out


def index_of(text: str) -> int:
    return int(re.search(r"Post:\npost (\d+)", text).group(1))


def scripted_faults(text: str, attempt: int):
    i = index_of(text) % 6
    if i == 0 and attempt == 0:
        return "429"
    if i == 1 and attempt < 2:
        return "500"
    if i == 2 and attempt == 0:
        return "timeout"
    if i == 3 and attempt == 0:
        return "garbage_body"
    return None


def decide_with_garbage(text: str) -> str:
    # Every sixth prompt (i % 6 == 4) gets a reply that names no choice.
    return "I cannot decide between them." if index_of(text) % 6 == 4 else prefers_good(text)


def test_verdicts_retries_cache_and_cost(tmp_path):
    items = comparisons(30)
    cache = tmp_path / "verdicts.jsonl"
    with ChatServer(decide=decide_with_garbage, faults=scripted_faults) as server:
        judge = OpenAIJudge(
            cache_path=cache, base_url=server.base_url, concurrency=4, price_per_million=(1.0, 2.0), **FAST
        )
        verdicts = judge.judge(items)
        for i, verdict in enumerate(verdicts):
            assert not verdict.error and not verdict.cached
            if i % 6 == 4:
                assert verdict.unparsable and "cannot decide" in verdict.raw
            else:
                assert verdict.choice == ("A" if i % 2 == 0 else "B"), (i, verdict)
                assert verdict.reason.startswith("response")
        usage = judge.usage()
        # Per six prompts: one 429, two 500s, one timeout, one unreadable body are retried.
        assert usage["retries"] == 5 * 5
        assert usage["requests"] == server.requests == 30 + 25
        assert usage["completion_tokens"] == 7 * 30
        assert usage["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 1.0 + 7 * 30 * 2.0) / 1e6)
        # A second run (a new judge on the same cache file, as after a restart) sends nothing.
        again = OpenAIJudge(cache_path=cache, base_url=server.base_url, **FAST)
        second = again.judge(items)
        assert server.requests == 55
        assert [v.choice for v in second] == [v.choice for v in verdicts]
        assert all(v.cached for v in second) and again.usage()["cache_hits"] == 30
        # Swapping A and B is a different question: it is asked, not served from the cache.
        swapped = Comparison(items[5].prompt, items[5].response_b, items[5].response_a)
        assert again.judge([swapped])[0].choice == "A" and server.requests == 56


def test_a_torn_cache_line_is_ignored(tmp_path):
    cache = tmp_path / "verdicts.jsonl"
    with ChatServer() as server:
        OpenAIJudge(cache_path=cache, base_url=server.base_url, **FAST).judge(comparisons(2))
        cache.write_text(cache.read_text() + '{"key": "abc", "rep')  # a crash mid-write
        judge = OpenAIJudge(cache_path=cache, base_url=server.base_url, **FAST)
        assert [v.cached for v in judge.judge(comparisons(2))] == [True, True]
        assert server.requests == 2


def test_concurrency_limit(tmp_path):
    with ChatServer(faults=lambda text, attempt: "timeout", slow_s=0.2) as server:
        judge = OpenAIJudge(
            cache_path=tmp_path / "c.jsonl",
            base_url=server.base_url,
            concurrency=3,
            **{**FAST, "timeout_s": 10},
        )
        start = time.monotonic()
        verdicts = judge.judge(comparisons(9))
        assert all(not v.error for v in verdicts)
        assert 2 <= server.max_in_flight <= 3
        assert time.monotonic() - start >= 3 * 0.2  # 9 slow requests, 3 at a time


def test_retries_exhausted_give_error_verdicts_and_nothing_cached(tmp_path):
    with ChatServer(faults=lambda text, attempt: "500") as server:
        judge = OpenAIJudge(cache_path=tmp_path / "c.jsonl", base_url=server.base_url, max_retries=2, **FAST)
        verdicts = judge.judge(comparisons(3))
        assert all(v.error and v.choice is None and "HTTP 500" in v.reason for v in verdicts)
        assert server.requests == 3 * 3
    assert not (tmp_path / "c.jsonl").exists()


def test_fatal_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeError, match="OPENAI_API_KEY"):
        OpenAIJudge(cache_path=tmp_path / "c.jsonl")
    with ChatServer() as server:
        options = dict(cache_path=tmp_path / "c.jsonl", base_url=server.base_url, **FAST)
        with pytest.raises(JudgeError, match="refused the request .HTTP 401.: Incorrect API key"):
            OpenAIJudge(**{**options, "api_key": "wrong"}).judge(comparisons(4))
        with pytest.raises(JudgeError, match="unknown model .*gpt-nonexistent"):
            OpenAIJudge(**{**options, "model": "gpt-nonexistent"}).judge(comparisons(4))
        assert server.requests <= 2 * 4
    assert not (tmp_path / "c.jsonl").exists()


@pytest.mark.parametrize(
    "reply,choice",
    [
        ("Comparison: A is tighter.\nPreferred: A", "A"),
        ("Comparison: B keeps the key fact.\n\nPreferred: B\n", "B"),
        ("**Comparison:** same.\n**Preferred:** Tie", None),  # no built-in template offers a tie
        ('Comparison: x\nPreferred: "B"', "B"),
        ("Summary A misses the point, so\nB", "B"),
        ("I prefer neither.", None),
        ("Preferred: C", None),
        ("", None),
    ],
)
def test_parse_choice(reply, choice):
    assert parse_choice(reply)[0] == choice
