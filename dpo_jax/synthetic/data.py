"""Synthetic token arrays as the trainer's `PreparedData`, so every stage runs through `run_training`.

Owns `prepared_from_arrays`: fixed-length prompts [N, P] and responses [N, K, T] become a
`TokenizedSplit` (flat tokens, regular offsets) without a tokenizer. Nothing is appended: the task's
responses are exactly T tokens with no EOS, so a model over the task's vocabulary normalises over the
V**T completions and the trainer's log pi(y|x) is the one the exact evaluator sums.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dpo_jax.data.prepare import PreparedData
from dpo_jax.data.report import BadInputReport
from dpo_jax.data.tokenization import TokenizedSplit

SOURCE = "synthetic"
# The loader pads with it; every synthetic sequence has the same length, so it never appears in a batch.
PAD_ID = 0


def tokenized_split(prompts: np.ndarray, responses: np.ndarray) -> TokenizedSplit:
    """[N, P] prompts and [N, K, T] responses as a `TokenizedSplit` (response k of example i is slot i*K+k)."""
    prompts = np.asarray(prompts, np.int32)
    responses = np.asarray(responses, np.int32)
    if prompts.ndim != 2 or responses.ndim != 3 or len(prompts) != len(responses):
        raise ValueError(
            f"need prompts [N, P] and responses [N, K, T]; got {prompts.shape} and {responses.shape}"
        )
    num_examples, prompt_length = prompts.shape
    _, num_responses, response_length = responses.shape
    return TokenizedSplit(
        prompt_tokens=prompts.ravel(),
        prompt_offsets=np.arange(num_examples + 1, dtype=np.int64) * prompt_length,
        response_tokens=responses.ravel(),
        response_offsets=np.arange(num_examples * num_responses + 1, dtype=np.int64) * response_length,
        num_responses=num_responses,
    )


def _fingerprint(stage: str, prompts: np.ndarray, responses: np.ndarray) -> str:
    digest = hashlib.sha256(stage.encode())
    for array in (prompts, responses):
        array = np.ascontiguousarray(array, np.int32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _report(split: str, num_examples: int) -> BadInputReport:
    return BadInputReport(split=split, rows_read=num_examples, examples_kept=num_examples)


def prepared_from_arrays(
    stage: str,
    train: tuple[np.ndarray, np.ndarray],
    eval: tuple[np.ndarray, np.ndarray] | None = None,
) -> PreparedData:
    """`PreparedData` for `stage` ("sft": K = 1; "dpo": K >= 2, response 0 preferred) from
    (prompts [N, P], responses [N, K, T]) pairs of arrays; `eval` is optional."""
    train_split = tokenized_split(*train)
    eval_split = None if eval is None else tokenized_split(*eval)
    if eval_split is not None and eval_split.num_responses != train_split.num_responses:
        raise ValueError(
            f"eval examples have {eval_split.num_responses} responses, train examples {train_split.num_responses}"
        )
    return PreparedData(
        source=SOURCE,
        stage=stage,
        train=train_split,
        eval=eval_split,
        num_responses=train_split.num_responses,
        prompt_only=False,
        pad_id=PAD_ID,
        eos_id=-1,  # the task has no EOS token (responses have a fixed length)
        max_length=int(train_split.sequence_lengths().max()),
        train_report=_report("train", train_split.num_examples),
        eval_report=None if eval_split is None else _report("eval", eval_split.num_examples),
        fingerprint=_fingerprint(stage, *train),
        eval_fingerprint=None if eval is None else _fingerprint(stage, *eval),
        cache_hits={"train": False, "eval": False},
    )
