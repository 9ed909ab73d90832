"""Prompts as text in, completions as text out: reading prompt files, encoding them left padded, and
sampling completions of them with `generate` (the library side of `python -m dpo_jax.sample`).

Prompts are encoded without special tokens (as training does), left padded, and keep their end when
longer than the room the model leaves them. `sample_policy` keeps the tokens and log-probs of several
completions per prompt (see batched.py); `sample_completions` is its one-completion text view.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from dpo_jax import MissingInputError, UserError
from dpo_jax.sampling.batched import Samples, sample_token_ids
from dpo_jax.sampling.settings import SamplingSettings

logger = logging.getLogger("dpo_jax")


def read_prompts(path: str) -> list[str]:
    """The prompts of a text file (one per non-blank line) or a `.jsonl` file (one JSON string or
    {"prompt": "..."} object per line). A file that is missing, not UTF-8, or has a line that is not
    such a record is a `UserError` naming the file, the line and the field."""
    try:
        raw_lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        raise MissingInputError(f"--prompts_file={path}: no such file") from None
    except OSError as error:
        raise UserError(f"--prompts_file={path}: cannot read it ({error.strerror or error})") from None
    prompts = []
    for number, raw in enumerate(raw_lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(
                f"{path}, line {number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
            ) from None
        if not line.strip():
            continue
        prompts.append(_jsonl_prompt(path, number, line) if path.endswith(".jsonl") else line)
    return prompts


def _jsonl_prompt(path: str, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        raise UserError(
            f"{path}, line {number}: a JSON {type(record).__name__}; expected a string or an object with a "
            "`prompt` string"
        )
    if "prompt" not in record:
        fields = ", ".join(sorted(record)) or "none"
        raise UserError(f"{path}, line {number}: no `prompt` field (its fields: {fields})")
    if not isinstance(record["prompt"], str):
        value = "null" if record["prompt"] is None else f"a JSON {type(record['prompt']).__name__}"
        raise UserError(f"{path}, line {number}: field `prompt` is {value}, not a string")
    return record["prompt"]


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_prompts(tokenizer, prompts: list[str], max_prompt_length: int):
    """Left-padded ids [N, P] and mask [N, P]; prompts longer than max_prompt_length keep their end
    (the reference implementation's rule for dialogue), with a warning."""
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    for index, ids in enumerate(encoded):
        if not ids:
            raise UserError(f"prompt {index} encodes to no tokens: nothing to continue")
        if len(ids) > max_prompt_length:
            logger.warning("prompt %d has %d tokens; keeping its last %d", index, len(ids), max_prompt_length)
            encoded[index] = ids[-max_prompt_length:]
    return left_pad(encoded, pad_id(tokenizer))


def left_pad(sequences, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Token sequences left padded to a common width: ids [N, P] and mask [N, P] (1 on real tokens),
    the layout `generate` takes."""
    width = max(len(sequence) for sequence in sequences)
    ids = np.full((len(sequences), width), pad, np.int32)
    mask = np.zeros((len(sequences), width), np.int32)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence) :] = sequence
        mask[row, width - len(sequence) :] = 1
    return ids, mask


def decode_completions(tokenizer, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    texts = []
    for row, row_mask in zip(tokens, mask):
        kept = row[row_mask == 1].tolist()
        if kept and kept[-1] == tokenizer.eos_token_id:
            kept = kept[:-1]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts


def sample_policy(
    model,
    params,
    tokenizer,
    prompts: list[str],
    *,
    settings: SamplingSettings,
    num_samples: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    mesh=None,
    resume_path: str | None = None,
    model_identity: str = "",
) -> Samples:
    """`num_samples` completions per text prompt (`sample_token_ids` on the encoded prompts, on `mesh`,
    by default every device on the data axis), with the completions decoded into `texts`; `settings`
    are the `SamplingSettings`; `resume_path` keeps finished prompts for a rerun."""
    max_new_tokens = settings.max_new_tokens
    max_prompt_length = model.config.max_position_embeddings - max_new_tokens
    if max_prompt_length < 1:
        raise UserError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
            f"{model.config.max_position_embeddings} positions"
        )
    ids, mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    samples = sample_token_ids(
        model,
        params,
        ids,
        mask,
        settings=settings,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        eos_id=tokenizer.eos_token_id,
        pad_id=pad_id(tokenizer),
        mesh=mesh,
        resume_path=resume_path,
        model_identity=model_identity,
    )
    return dataclasses.replace(samples, texts=decode_completions(tokenizer, samples.tokens, samples.mask))


def sample_completions(
    model, params, tokenizer, prompts: list[str], *, settings: SamplingSettings, batch_size: int, seed: int, **options
) -> list[str]:
    """One completion per prompt (text up to, not including, EOS); `options` go to `sample_policy`."""
    return sample_policy(
        model, params, tokenizer, prompts, settings=settings, batch_size=batch_size, seed=seed, **options
    ).texts
