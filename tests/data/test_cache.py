"""The tokenised-data cache: hit on a second run, miss whenever data, tokenizer or options change."""

import shutil

import numpy as np

from dpo_jax.data import build_datasets, fixture_dir, load_tokenizer
from dpo_jax.data.cache import cache_key, load_cached_split
from tests.data.data_helpers import data_config


def _build(tokenizer, cache_dir, **overrides):
    return build_datasets(data_config(cache_dir=str(cache_dir), **overrides), tokenizer, stage="dpo")


def test_second_run_hits_the_cache_and_gives_the_same_data(tmp_path, tokenizer):
    first = _build(tokenizer, tmp_path)
    second = _build(tokenizer, tmp_path)
    assert first.cache_hits == {"train": False, "eval": False}
    assert second.cache_hits == {"train": True, "eval": True}
    for name, array in first.train.arrays().items():
        np.testing.assert_array_equal(second.train.arrays()[name], array)
    assert second.fingerprint == first.fingerprint
    assert second.train_report == first.train_report  # the bad-row report survives the cache


def test_cache_misses_after_changing_options_data_or_tokenizer(tmp_path, tokenizer):
    base = _build(tokenizer, tmp_path)
    assert _build(tokenizer, tmp_path, max_length=96).cache_hits["train"] is False
    assert _build(tokenizer, tmp_path, truncation_mode="keep_start").cache_hits["train"] is False
    assert _build(tokenizer, tmp_path, max_train_examples=5).cache_hits["train"] is False

    data = tmp_path / "hh"
    shutil.copytree(fixture_dir("hh"), data)
    moved = _build(tokenizer, tmp_path, path=str(data))
    # The cache is keyed by path too, but a moved copy of the same bytes is the same data for resuming.
    assert moved.cache_hits["train"] is False and moved.fingerprint == base.fingerprint
    assert _build(tokenizer, tmp_path, path=str(data)).cache_hits["train"] is True
    with open(data / "train.jsonl", "a", encoding="utf-8") as handle:
        handle.write(
            '{"chosen": "\\n\\nHuman: new?\\n\\nAssistant: yes", "rejected": "\\n\\nHuman: new?\\n\\nAssistant: no"}\n'
        )
    changed = _build(tokenizer, tmp_path, path=str(data))
    assert changed.cache_hits == {"train": False, "eval": True}
    assert changed.fingerprint != base.fingerprint

    other = load_tokenizer("tiny")
    other.chat_template = "{{ messages[0]['content'] }}"
    assert (
        build_datasets(data_config(cache_dir=str(tmp_path)), other, stage="dpo").cache_hits["train"] is False
    )


def test_unreadable_entry_is_a_logged_miss(tmp_path, tokenizer, caplog):
    _build(tokenizer, tmp_path)
    for npz in tmp_path.glob("*.npz"):
        npz.write_bytes(b"not a zip file")
    rebuilt = _build(tokenizer, tmp_path)
    assert rebuilt.cache_hits["train"] is False
    assert "unreadable data cache entry" in caplog.text
    assert load_cached_split(str(tmp_path), cache_key({"nothing": "here"})) is None
