"""An LLM judge behind any OpenAI-compatible chat-completions endpoint (GPT-4 in the DPO paper).

Plain HTTP (urllib), so the request, the retries and the errors are ours and are tested against a
local server speaking the protocol:
  * concurrency: at most `concurrency` requests in flight (a thread pool);
  * retries: 429, 5xx, timeouts, dropped connections and unreadable bodies are retried with
    exponential backoff (honouring Retry-After), up to `max_retries` times; a comparison that still
    fails is returned as an error verdict and the caller refuses to report a result;
  * fatal errors (no key, 401/403, unknown model or endpoint 404, other 4xx) raise `JudgeError` at
    once: every further request would fail the same way;
  * every reply is cached on disk the moment it arrives (`VerdictCache`), unparsable ones included
    (they were paid for), so a rerun or a crashed run never pays twice;
  * token usage and, for models with a known or given price, the cost in USD are counted.

On OpenAI's endpoint the judge is named "openai:<model>" and a known model is costed at its list price;
on any other base URL (a local server, another provider) it is named by its model alone, the model must
be given, and it is costed only at a given `price_per_million`: OpenAI's prices say nothing there.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import hashlib
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from dpo_jax.judges.base import Comparison, Judge, JudgeError, Verdict
from dpo_jax.judges.cache import VerdictCache, verdict_key
from dpo_jax.judges.chat_prompts import JudgePrompt, builtin_prompt

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-2024-08-06"  # a pinned GPT-4-class snapshot, so verdicts stay comparable
API_KEY_ENV = "OPENAI_API_KEY"
# USD per million (input, output) tokens, as OpenAI listed them when this was written; pass
# `price_per_million` for any other model or a changed price.
KNOWN_PRICES = {
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
}
_RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (it may also be an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:300].decode("utf-8", "replace")


class OpenAIJudge(Judge):
    def __init__(
        self,
        *,
        cache_path: str | os.PathLike,
        template: str | JudgePrompt = "summarization",
        model: str = "",
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 6,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_tokens: int = 256,
        temperature: float = 0.0,
        price_per_million: tuple[float, float] | None = None,
        retry_unparsable: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ):
        prompt = builtin_prompt(template) if isinstance(template, str) else template
        official = base_url.rstrip("/") == DEFAULT_BASE_URL
        if not model and not official:
            raise ValueError(f"a judge at {base_url} needs its model's name (--judge_model)")
        model = model or DEFAULT_MODEL
        api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not api_key:
            raise JudgeError(f"the openai judge needs an API key: set {API_KEY_ENV}")
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"need concurrency >= 1 and max_retries >= 0, got {concurrency}, {max_retries}")
        self.name = f"openai:{model}" if official else model
        self.model, self.prompt = model, prompt
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._concurrency, self._max_retries = concurrency, max_retries
        self._timeout_s, self._backoff_s, self._max_backoff_s = timeout_s, backoff_s, max_backoff_s
        self._max_tokens, self._temperature = max_tokens, temperature
        known = KNOWN_PRICES.get(model) if official else None
        self._prices = price_per_million if price_per_million is not None else known
        self._sleep = sleep
        # A cached reply that names no choice is kept (the cache appends; the newest reply wins) but,
        # when asked, sent again: a changed template or a flaky model may answer readably now.
        self._retry_unparsable = retry_unparsable
        self._cache = VerdictCache(cache_path)
        self._identity = {
            "kind": "openai",
            "model": model,
            "url": self._url,
            "template": hashlib.sha256(prompt.text.encode()).hexdigest()[:16],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        self._lock = threading.Lock()
        self._usage = dict(requests=0, retries=0, cache_hits=0, prompt_tokens=0, completion_tokens=0)

    # --- accounting ---------------------------------------------------------------------------------
    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self._usage[name] += value

    def usage(self) -> dict:
        with self._lock:
            usage = dict(self._usage)
        cost = None
        if self._prices is not None:
            price_in, price_out = self._prices
            cost = (usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out) / 1e6
        return {**usage, "model": self.model, "cost_usd": cost}

    # --- one HTTP request ---------------------------------------------------------------------------
    def _post(self, prompt_text: str) -> dict:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt_text}],
                "temperature": self._temperature,
                "max_tokens": self._max_tokens,
            }
        ).encode()
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._api_key}"},
        )
        self._count(requests=1)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            status, detail = error.code, _error_message(error.read())
            if status in _RETRY_STATUSES:
                retry_after = _retry_after_seconds(error.headers.get("Retry-After"))
                raise _Retryable(f"HTTP {status}: {detail}", retry_after) from None
            if status in (401, 403):
                raise JudgeError(f"{self._url} refused the request (HTTP {status}): {detail}") from None
            if status == 404:
                raise JudgeError(
                    f"{self._url} answered 404 for model {self.model!r} (unknown model or wrong base URL): {detail}"
                ) from None
            raise JudgeError(f"{self._url} rejected the request (HTTP {status}): {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise _Retryable(f"no answer from {self._url}: {getattr(error, 'reason', error)}") from None
        try:
            payload = json.loads(raw)
            content = payload["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise _Retryable(f"unreadable response body ({error}): {raw[:200]!r}") from None
        usage = payload.get("usage") or {}
        self._count(
            prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
            completion_tokens=int(usage.get("completion_tokens", 0) or 0),
        )
        return {"content": content, "usage": usage}

    def _post_with_retries(self, prompt_text: str, stop: threading.Event) -> dict | str:
        """The reply, or the last error message once retries are exhausted."""
        for attempt in range(self._max_retries + 1):
            if stop.is_set():
                return "cancelled after a fatal error elsewhere"
            try:
                return self._post(prompt_text)
            except _Retryable as error:
                last = str(error)
                if attempt == self._max_retries:
                    break
                self._count(retries=1)
                # Full jitter keeps many workers from retrying in lockstep.
                delay = min(self._max_backoff_s, self._backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
                if error.retry_after is not None:
                    delay = max(delay, min(error.retry_after, self._max_backoff_s))
                logger.info("judge request failed (%s); retry %d in %.2fs", last, attempt + 1, delay)
                self._sleep(delay)
        return f"gave up after {self._max_retries + 1} attempts: {last}"

    # --- the Judge interface ------------------------------------------------------------------------
    def _verdict(self, reply: dict, cached: bool) -> Verdict:
        choice, reason = self.prompt.parse(reply["content"])
        return Verdict(choice, reason=reason, raw=reply["content"], cached=cached)

    def judge(self, comparisons: Sequence[Comparison]) -> list[Verdict]:
        keys = [verdict_key(self._identity, c.prompt, c.response_a, c.response_b) for c in comparisons]
        verdicts: dict[str, Verdict] = {}
        todo: dict[str, Comparison] = {}
        for key, comparison in zip(keys, comparisons):
            reply = self._cache.get(key)
            if reply is not None and self._retry_unparsable and self.prompt.parse(reply["content"])[0] is None:
                reply = None
            if reply is not None:
                verdicts[key] = self._verdict(reply, cached=True)
            elif key not in todo:
                todo[key] = comparison
        self._count(cache_hits=len(comparisons) - len(todo))
        stop = threading.Event()

        def ask(key: str, comparison: Comparison):
            text = self.prompt.render(comparison.prompt, comparison.response_a, comparison.response_b)
            outcome = self._post_with_retries(text, stop)
            if isinstance(outcome, dict):
                self._cache.put(key, outcome)
            return key, outcome

        with concurrent.futures.ThreadPoolExecutor(self._concurrency) as pool:
            futures = [pool.submit(ask, key, comparison) for key, comparison in todo.items()]
            try:
                for future in concurrent.futures.as_completed(futures):
                    key, outcome = future.result()
                    if isinstance(outcome, dict):
                        verdicts[key] = self._verdict(outcome, cached=False)
                    else:
                        verdicts[key] = Verdict(None, reason=outcome, error=True)
            except JudgeError:
                stop.set()
                for future in futures:
                    future.cancel()
                raise
        usage = self.usage()
        logger.info(
            "judge %s: %d comparisons, %d from the cache, %d requests (%d retries), %d+%d tokens%s",
            self.name,
            len(comparisons),
            usage["cache_hits"],
            usage["requests"],
            usage["retries"],
            usage["prompt_tokens"],
            usage["completion_tokens"],
            "" if usage["cost_usd"] is None else f", ${usage['cost_usd']:.4f} so far",
        )
        return [verdicts[key] for key in keys]
