"""Evaluation prompt sets (issue 28 item 3): a seeded random subset of a split's distinct prompts, in
the split's order, named by ids; never a first-N slice, never silently smaller than asked."""

import pytest

from dpo_jax import UserError
from dpo_jax.data.prompt_sets import choose, prompt_id


def test_a_seeded_random_subset_in_the_splits_order():
    # A split ordered by subset: the first half is one subset, the second another (as HH's test split).
    split = [f"subset a {i}" for i in range(50)] + [f"subset b {i}" for i in range(50)]
    chosen, prompt_set = choose(split, 10, seed=0, what="test")
    assert len(chosen) == 10 and chosen != split[:10]
    assert any(p.startswith("subset a") for p in chosen) and any(p.startswith("subset b") for p in chosen)
    assert chosen == sorted(chosen, key=split.index)  # kept in the split's order
    again, same = choose(list(split), 10, seed=0, what="test")
    assert again == chosen and same == prompt_set and same.digest == prompt_set.digest
    other, other_set = choose(split, 10, seed=1, what="test")
    assert other != chosen and other_set.digest != prompt_set.digest
    assert prompt_set.ids == tuple(prompt_id(p) for p in chosen) and prompt_set.available == 100
    assert prompt_set.to_json()["prompt_ids"] == list(prompt_set.ids)


def test_duplicates_count_once_and_zero_keeps_all():
    chosen, prompt_set = choose(["x", "y", "x", "z"], 0, seed=3, what="test")
    assert chosen == ["x", "y", "z"] and prompt_set.available == 3
    assert choose(["x", "y", "z"], 3, seed=3, what="test")[0] == ["x", "y", "z"]


def test_fewer_than_asked_is_one_error_naming_the_split():
    with pytest.raises(UserError, match="split 'test' of 'hub/data': 4 prompts asked for, but only 3"):
        choose(["a", "b", "c", "a"], 4, seed=0, what="split 'test' of 'hub/data'")
