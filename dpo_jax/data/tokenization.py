"""Tokenisation as the reference DPO implementation does it, into a compact ragged store.

Per example (`truncate_example` holds the rule, token for token):
- prompt and each response are tokenised separately, with no BOS or other special tokens;
- EOS is appended to every response;
- if prompt + longest response > max_length, the prompt is cut to max_prompt_length, keeping its END
  (`keep_end`, dialogue) or its START (`keep_start`);
- if still too long, every response is cut to max_length - max_prompt_length, keeping its start.
Rows whose text already contains the EOS token (it would end the response early) and rows left with an
empty response are rejected and counted.

`TokenizedSplit` stores prompt tokens once per example and response tokens once per response, as flat
arrays with offsets, so memory follows the real token count instead of N x K x max_length; the loader
builds padded batches from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from dpo_jax.data.report import (
    EMPTY_FIELD,
    EOS_IN_TEXT,
    NO_ROOM_FOR_RESPONSE,
    BadInputReport,
    BadRow,
    RowLocation,
)
from dpo_jax.data.sources import Example

TRUNCATION_MODES = ("keep_end", "keep_start")
_CHUNK_EXAMPLES = 1024


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
    """Examples as flat token arrays; response k of example i is response slot i * K + k.

    Prompt-only data (for sampling) has K = 1 and every response empty. `extras` are per-example arrays
    computed at run time (e.g. precomputed reference log-probs, [N, K]); batches carry their rows.
    """

    prompt_tokens: np.ndarray  # int32 [total prompt tokens]
    prompt_offsets: np.ndarray  # int64 [N + 1]
    response_tokens: np.ndarray  # int32 [total response tokens]
    response_offsets: np.ndarray  # int64 [N * K + 1]
    num_responses: int
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def num_examples(self) -> int:
        return len(self.prompt_offsets) - 1

    def prompt_lengths(self) -> np.ndarray:
        return np.diff(self.prompt_offsets)

    def response_lengths(self) -> np.ndarray:
        return np.diff(self.response_offsets).reshape(self.num_examples, self.num_responses)

    def sequence_lengths(self) -> np.ndarray:
        """[N, K] prompt + response token counts."""
        return self.prompt_lengths()[:, None] + self.response_lengths()

    def prompt(self, index: int) -> np.ndarray:
        return self.prompt_tokens[self.prompt_offsets[index] : self.prompt_offsets[index + 1]]

    def response(self, index: int, k: int) -> np.ndarray:
        slot = index * self.num_responses + k
        return self.response_tokens[self.response_offsets[slot] : self.response_offsets[slot + 1]]

    def with_extras(self, **arrays: np.ndarray) -> TokenizedSplit:
        """A copy that also carries these per-example arrays (leading dimension N) into batches."""
        reserved = {"input_ids", "attention_mask", "loss_mask", "example_mask"}
        for name, array in arrays.items():
            if name in reserved:
                raise ValueError(f"extra array name {name!r} clashes with a batch field")
            if len(array) != self.num_examples:
                raise ValueError(
                    f"extra array {name!r} has {len(array)} rows for {self.num_examples} examples"
                )
        return dataclasses.replace(self, extras={**self.extras, **arrays})

    def head(self, count: int) -> TokenizedSplit:
        """The first `count` examples."""
        count = min(count, self.num_examples)
        prompt_end = self.prompt_offsets[count]
        response_end = self.response_offsets[count * self.num_responses]
        return TokenizedSplit(
            self.prompt_tokens[:prompt_end],
            self.prompt_offsets[: count + 1],
            self.response_tokens[:response_end],
            self.response_offsets[: count * self.num_responses + 1],
            self.num_responses,
            {name: array[:count] for name, array in self.extras.items()},
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "prompt_offsets": self.prompt_offsets,
            "response_tokens": self.response_tokens,
            "response_offsets": self.response_offsets,
            "num_responses": np.asarray(self.num_responses, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> TokenizedSplit:
        return cls(
            np.asarray(arrays["prompt_tokens"], dtype=np.int32),
            np.asarray(arrays["prompt_offsets"], dtype=np.int64),
            np.asarray(arrays["response_tokens"], dtype=np.int32),
            np.asarray(arrays["response_offsets"], dtype=np.int64),
            int(arrays["num_responses"]),
        )


def truncate_example(
    prompt: list[int],
    responses: list[list[int]],
    *,
    max_length: int,
    max_prompt_length: int,
    truncation_mode: str,
) -> tuple[list[int], list[list[int]]]:
    """The reference rule; `responses` already end in EOS. Returns the (prompt, responses) kept."""
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    longest = max((len(r) for r in responses), default=0)
    if len(prompt) + longest > max_length and len(prompt) > max_prompt_length:
        cut = len(prompt) - max_prompt_length
        prompt = prompt[cut:] if truncation_mode == "keep_end" else prompt[:max_prompt_length]
    if len(prompt) + longest > max_length:
        # The budget is max_length - max_prompt_length, not what this prompt left: as in the reference,
        # so a response is cut the same way whatever the length of its prompt.
        responses = [r[: max_length - max_prompt_length] for r in responses]
    return prompt, responses


@dataclasses.dataclass(frozen=True)
class TokenizeSettings:
    max_length: int
    max_prompt_length: int
    truncation_mode: str
    prompt_only: bool = False


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    # verbose=False: long texts are expected here (they are truncated below), not worth a warning.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _fit_one(
    prompt,
    responses,
    eos_id: int,
    settings: TokenizeSettings,
    report: BadInputReport | None = None,
    location: RowLocation | None = None,
) -> tuple[list[int], list[list[int]]]:
    if eos_id in prompt:
        raise BadRow(EOS_IN_TEXT, "prompt", "the prompt text contains the EOS token")
    for k, response in enumerate(responses):
        if eos_id in response:
            raise BadRow(EOS_IN_TEXT, f"responses[{k}]", "the response text contains the EOS token")
    if settings.prompt_only:
        if not prompt:
            raise BadRow(EMPTY_FIELD, "prompt", "prompt-only data needs a non-empty prompt to sample from")
        cut = truncate_example(
            prompt,
            [],
            max_length=settings.max_prompt_length,
            max_prompt_length=settings.max_prompt_length,
            truncation_mode=settings.truncation_mode,
        )[0]
        return cut, [[]]
    full_prompt_length = len(prompt)
    full_response_lengths = [len(r) + 1 for r in responses]
    prompt, responses = truncate_example(
        prompt,
        [list(r) + [eos_id] for r in responses],
        max_length=settings.max_length,
        max_prompt_length=settings.max_prompt_length,
        truncation_mode=settings.truncation_mode,
    )
    if any(not r for r in responses):
        raise BadRow(
            NO_ROOM_FOR_RESPONSE,
            "prompt",
            f"after truncation the prompt ({len(prompt)} tokens) leaves no room in max_length={settings.max_length}",
        )
    if report is not None:
        cut_responses = [f"{n} -> {len(r)}" for r, n in zip(responses, full_response_lengths) if len(r) < n]
        cut_prompt = len(prompt) < full_prompt_length
        detail = [f"prompt {full_prompt_length} -> {len(prompt)} tokens"] if cut_prompt else []
        detail += [f"responses {', '.join(cut_responses)} tokens (EOS included)"] if cut_responses else []
        report.count_truncation(
            prompt=cut_prompt, response=bool(cut_responses), location=location, detail="; ".join(detail)
        )
    return prompt, responses


def tokenize_examples(
    examples: Iterable[tuple[RowLocation, Example]],
    tokenizer,
    settings: TokenizeSettings,
    *,
    report: BadInputReport,
    limit: int = 0,
    num_responses: int | None = None,
) -> TokenizedSplit:
    """Tokenises examples that all have the same number of responses (none when prompt-only).

    K is `num_responses` when given, else the first example's (1 for prompt-only data, whose single
    response slot stays empty). Stops once `limit` examples are kept (0 = no limit), so a small run
    over a large dataset only pays for what it uses. Rejected rows go to `report`.
    """
    eos_id = tokenizer.eos_token_id
    prompt_parts: list[np.ndarray] = []
    response_parts: list[np.ndarray] = []
    prompt_lengths: list[int] = []
    response_lengths: list[int] = []
    kept = 0
    for chunk in _chunks(examples, _CHUNK_EXAMPLES):
        prompts = _encode(tokenizer, [example.prompt for _, example in chunk])
        responses = _encode(tokenizer, [r for _, example in chunk for r in example.responses])
        start = 0
        for (location, example), prompt in zip(chunk, prompts):
            own = responses[start : start + len(example.responses)]
            start += len(example.responses)
            if limit and kept >= limit:
                break
            if num_responses is None:
                num_responses = 1 if settings.prompt_only else len(example.responses)
            try:
                prompt, own = _fit_one(prompt, own, eos_id, settings, report, location)
            except BadRow as error:
                report.record(error, location)
                continue
            prompt_parts.append(np.asarray(prompt, dtype=np.int32))
            prompt_lengths.append(len(prompt))
            for response in own:
                response_parts.append(np.asarray(response, dtype=np.int32))
                response_lengths.append(len(response))
            kept += 1
        if limit and kept >= limit:
            break
    report.examples_kept = kept
    return TokenizedSplit(
        _concatenate(prompt_parts),
        _offsets(prompt_lengths),
        _concatenate(response_parts),
        _offsets(response_lengths),
        num_responses or 1,
    )


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros((0,), np.int32)


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)
