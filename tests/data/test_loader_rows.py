"""Row batches from the loaders (shared prompts, packing): the same examples per step as padded batches,
deterministic and resumable, process slices that concatenate, every eval example once."""

import itertools

import numpy as np
import pytest

from dpo_jax.data import EvalBatches, TrainLoader
from dpo_jax.data.packing import (
    RowLayout,
    batch_layout,
    example_row_lengths,
    longest_possible_row,
    worst_case_row_shape,
)
from tests.data.data_helpers import split_from_lists
from tests.data.test_loader import PAD, _split
from tests.train_helpers import tiny_config

LAYOUTS = {
    "share": RowLayout(share_prompt=True),
    "pack": RowLayout(share_prompt=False, pack=True, pack_length=40, row_multiple=2),
    "share_pack": RowLayout(share_prompt=True, pack=True, pack_length=30, row_multiple=2),
}


def _loader(split, layout, *, process_index=0, process_count=1, batch=6):
    return TrainLoader(
        split,
        global_batch_size=batch,
        seed=3,
        process_index=process_index,
        process_count=process_count,
        pad_id=PAD,
        max_length=16,
        fingerprint="fp",
        layout=layout,
    )


def _unpack(batch, split):
    """{example index: (prompt, [response tokens ...])} read back from rows through the ids alone."""
    examples = {}
    for r, slots in enumerate(batch["example_index"]):
        for s, index in enumerate(slots):
            if index < 0:
                continue
            mine = batch["segment_ids"][r] == s + 1
            branches = batch["branch_ids"][r]
            prefix = list(batch["input_ids"][r][mine & (branches == 0)])
            responses, prompts = [], set()
            for k in range(split.num_responses):
                tokens = batch["input_ids"][r][mine & (branches == k + 1)]
                counted = batch["loss_mask"][r][mine & (branches == k + 1)] > 0
                responses.append(list(tokens[counted]))
                prompts.add(tuple(prefix + list(tokens[~counted])))
            assert len(prompts) == 1, "every branch must see the same prompt"
            examples[int(index)] = (list(prompts.pop()), responses)
    return examples


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_rows_hold_exactly_the_steps_examples(name):
    split = _split(num_examples=23, num_responses=2)
    loader, padded = _loader(split, LAYOUTS[name]), _loader(split, None)
    lengths = example_row_lengths(split, LAYOUTS[name].share_prompt)
    for step in range(5):  # crosses an epoch boundary (3 steps per epoch)
        batch = loader.batch(step)
        expected = padded.batch(step)["index"]
        examples = _unpack(batch, split)
        assert sorted(examples) == sorted(expected)
        assert batch["example_mask"].sum() == len(expected)
        for index, (prompt, responses) in examples.items():
            assert prompt == list(split.prompt(index))
            assert responses == [list(split.response(index, k)) for k in range(2)]
        np.testing.assert_array_equal(
            batch["index"][batch["example_mask"] > 0], batch["example_index"][batch["example_mask"] > 0]
        )
        assert len(batch["input_ids"]) % LAYOUTS[name].row_multiple == 0
        assert (batch["segment_ids"] > 0).sum() == loader.real_tokens(step) == lengths[expected].sum()
        if LAYOUTS[name].pack:
            assert len(batch["input_ids"]) < len(expected)  # packing used fewer rows than examples


@pytest.mark.parametrize("name", ["share", "share_pack"])
def test_two_processes_concatenate_and_a_new_loader_resumes_identically(name):
    split = _split(num_examples=23)
    single = _loader(split, LAYOUTS[name])
    halves = [_loader(split, LAYOUTS[name], process_index=p, process_count=2) for p in range(2)]
    restarted = _loader(split, LAYOUTS[name])
    for step in (4, 0, 2):
        whole = single.batch(step)
        for key in whole:
            np.testing.assert_array_equal(
                whole[key], np.concatenate([h.batch(step)[key] for h in halves]), key
            )
            np.testing.assert_array_equal(whole[key], restarted.batch(step)[key], key)
    assert single.position(4) == _loader(split, None).position(4)  # the layout does not move the data


def test_eval_rows_cover_every_example_once_without_fillers():
    split = _split(num_examples=11)
    batches = EvalBatches(
        split,
        global_batch_size=4,
        process_index=0,
        process_count=1,
        pad_id=PAD,
        max_length=16,
        layout=LAYOUTS["share_pack"],
    )
    seen = [int(i) for batch in batches for i in batch["example_index"][batch["example_mask"] > 0]]
    assert sorted(seen) == list(range(11))
    assert all(
        batch["example_index"][batch["example_mask"] == 0].tolist()
        == [-1] * int((batch["example_mask"] == 0).sum())
        for batch in batches
    )


def test_a_pack_length_shorter_than_an_example_is_refused():
    with pytest.raises(ValueError, match="pack_length=8 is shorter than the longest example row"):
        _loader(_split(), RowLayout(pack=True, pack_length=8))


@pytest.mark.parametrize("num_responses", [2, 4])
def test_the_longest_possible_row_is_k_times_max_length(num_responses):
    # Every example whose sequences x y_k fit max_length (a response holds at least its EOS).
    max_length, k = 6, num_responses
    shapes = [
        (p, lengths)
        for p in range(max_length)
        for lengths in itertools.product(range(1, max_length - p + 1), repeat=k)
    ]
    split = split_from_lists([[7] * p for p, _ in shapes], [[[9] * r for r in rs] for _, rs in shapes])
    bound = longest_possible_row(max_length, k)
    assert bound == k * max_length
    for share in (True, False):
        lengths = example_row_lengths(split, share)
        assert lengths.max() == bound, share
    # Shared, it is reached by a 1-token prompt with every response max_length - 1 long.
    shared = example_row_lengths(split, True)
    assert shared[shapes.index((1, (max_length - 1,) * k))] == bound
    # The loader on such data builds rows exactly that long; the worst-case shape says so without data.
    for layout in (RowLayout(share_prompt=True), RowLayout(share_prompt=True, pack=True)):
        batch = EvalBatches(
            split,
            global_batch_size=len(shapes),
            process_index=0,
            process_count=1,
            pad_id=PAD,
            max_length=max_length,
            layout=layout,
        ).batch(0)
        row_length, slots = worst_case_row_shape(
            layout, max_length=max_length, num_responses=k, batch_size=len(shapes)
        )
        assert batch["input_ids"].shape[1] == row_length == bound
        assert batch["example_index"].shape[1] <= slots


def _layout(config, row_multiple):
    return batch_layout(config.data, stage=config.stage, row_multiple=row_multiple)


def test_the_policy_stages_share_the_prompt_by_default_and_the_reward_model_stays_padded():
    """The row layout is the data's decision (`data.packing.batch_layout`), by stage."""
    for stage, loss in (("dpo", "dpo"), ("sft", "sft")):
        assert _layout(tiny_config("hh", "tiny", stage=stage, loss=loss), row_multiple=8) == RowLayout(
            share_prompt=True, pack=False, row_multiple=8
        )
    reward = tiny_config("hh", "tiny", stage="reward_model", loss="bradley_terry")
    assert reward.data.share_prompt and _layout(reward, row_multiple=8) is None
    padded = tiny_config("hh", "tiny", **{"data.share_prompt": False})
    assert _layout(padded, row_multiple=8) is None
