"""Prompts as text in, completions as text out: reading prompt files, encoding them left padded, and
sampling one completion per prompt with `generate` (the library side of `python -m dpo_jax.sample`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import numpy as np

from dpo_jax.sampling.generate import generate

logger = logging.getLogger("dpo_jax")


def read_prompts(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if path.endswith(".jsonl"):
        records = [json.loads(line) for line in lines if line.strip()]
        return [r["prompt"] if isinstance(r, dict) else str(r) for r in records]
    return [line for line in lines if line.strip()]


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_prompts(tokenizer, prompts: list[str], max_prompt_length: int):
    """Left-padded ids [N, P] and mask [N, P]; prompts longer than max_prompt_length keep their end
    (the reference implementation's rule for dialogue), with a warning."""
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    for index, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {index} encodes to no tokens: nothing to continue")
        if len(ids) > max_prompt_length:
            logger.warning("prompt %d has %d tokens; keeping its last %d", index, len(ids), max_prompt_length)
            encoded[index] = ids[-max_prompt_length:]
    length = max(len(ids) for ids in encoded)
    input_ids = np.full((len(encoded), length), pad_id(tokenizer), np.int32)
    mask = np.zeros((len(encoded), length), np.int32)
    for row, ids in enumerate(encoded):
        input_ids[row, length - len(ids) :] = ids
        mask[row, length - len(ids) :] = 1
    return input_ids, mask


def sample_completions(
    model, params, tokenizer, prompts: list[str], *, settings: dict, batch_size: int, seed: int
):
    """One completion per prompt (text up to, not including, EOS)."""
    max_new_tokens = settings["max_new_tokens"]
    max_prompt_length = model.config.max_position_embeddings - max_new_tokens
    if max_prompt_length < 1:
        raise ValueError(
            f"--max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
            f"{model.config.max_position_embeddings} positions"
        )
    input_ids, mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    batch_size = min(batch_size, len(prompts))
    completions = []
    rng = jax.random.key(seed)
    for batch_index, start in enumerate(range(0, len(prompts), batch_size)):
        # Every call has batch_size rows (the last batch repeats its prompts), so one program serves all.
        rows = np.arange(start, start + batch_size) % len(prompts)
        out = generate(
            model,
            params,
            input_ids[rows],
            mask[rows],
            rng=jax.random.fold_in(rng, batch_index),
            eos_id=tokenizer.eos_token_id,
            pad_id=pad_id(tokenizer),
            **settings,
        )
        tokens, token_mask = np.asarray(out["tokens"]), np.asarray(out["mask"])
        for row in range(min(batch_size, len(prompts) - start)):
            kept = tokens[row][token_mask[row] == 1].tolist()
            if kept and kept[-1] == tokenizer.eos_token_id:
                kept = kept[:-1]
            completions.append(tokenizer.decode(kept, skip_special_tokens=True))
    return completions
