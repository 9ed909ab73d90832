"""Helpers shared by the data tests: a plain attribute config, JSONL writing, hand-built splits."""

import json
from types import SimpleNamespace

import numpy as np

from dpo_jax.data import TokenizedSplit


def data_config(**overrides) -> SimpleNamespace:
    """A data config with small lengths; any attribute object works, not only ConfigDict."""
    fields = dict(
        source="hh",
        path="fixture:hh",
        train_split="train",
        eval_split="test",
        max_length=128,
        max_prompt_length=64,
        truncation_mode="",
        cache_dir="",
        max_train_examples=0,
        max_eval_examples=0,
        shp_min_score_ratio=2.0,
    )
    fields.update(overrides)
    return SimpleNamespace(**fields)


def write_jsonl(path, rows) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split_from_lists(prompts: list[list[int]], responses: list[list[list[int]]]) -> TokenizedSplit:
    """A TokenizedSplit from explicit token lists (responses[i][k] = response k of example i)."""
    num_responses = len(responses[0])
    flat_responses = [r for rs in responses for r in rs]
    return TokenizedSplit(
        np.asarray([t for p in prompts for t in p], dtype=np.int32),
        np.concatenate([[0], np.cumsum([len(p) for p in prompts])]).astype(np.int64),
        np.asarray([t for r in flat_responses for t in r], dtype=np.int32),
        np.concatenate([[0], np.cumsum([len(r) for r in flat_responses])]).astype(np.int64),
        num_responses,
    )
