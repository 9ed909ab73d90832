"""Step-indexed loading: process slicing, exact resume, shuffling, eval coverage, shapes."""

import dataclasses
import json

import numpy as np
import pytest

from dpo_jax import UserError
from dpo_jax.data import (
    EvalBatches,
    TrainLoader,
    build_datasets,
    epoch_permutation,
    make_eval_batches,
    make_train_loader,
)
from tests.data.data_helpers import data_config, split_from_lists, write_jsonl

PAD = 0


def _split(num_examples: int = 21, num_responses: int = 2):
    """Example i has prompt [i+1] * (1 + i % 5) and responses of lengths 1 + (i + k) % 7."""
    prompts = [[i + 1] * (1 + i % 5) for i in range(num_examples)]
    responses = [[[100 + k] * (1 + (i + k) % 7) for k in range(num_responses)] for i in range(num_examples)]
    split = split_from_lists(prompts, responses)
    return split.with_extras(index=np.arange(num_examples))


def _loader(split, *, process_index=0, process_count=1, seed=3, batch=4, fingerprint="fp"):
    return TrainLoader(
        split,
        global_batch_size=batch,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        pad_id=PAD,
        max_length=16,
        fingerprint=fingerprint,
    )


def _assert_batches_equal(left, right):
    assert left.keys() == right.keys()
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def test_two_processes_concatenate_to_the_one_process_batch():
    split = _split()
    single = _loader(split)
    halves = [_loader(split, process_index=p, process_count=2) for p in range(2)]
    assert single.steps_per_epoch == 5
    for step in range(12):  # crosses two epoch boundaries
        joined = {key: np.concatenate([h.batch(step)[key] for h in halves]) for key in single.batch(step)}
        _assert_batches_equal(single.batch(step), joined)


def test_batch_layout_follows_the_stored_lengths():
    split = _split()
    batch = _loader(split).batch(0)
    assert batch["input_ids"].shape == (4, 2, 16)
    for b, index in enumerate(batch["index"]):
        for k in range(2):
            prompt, response = split.prompt(index), split.response(index, k)
            end = len(prompt) + len(response)
            np.testing.assert_array_equal(batch["input_ids"][b, k, :end], np.concatenate([prompt, response]))
            assert (batch["input_ids"][b, k, end:] == PAD).all()
            assert batch["attention_mask"][b, k].sum() == end
            assert batch["loss_mask"][b, k, len(prompt) : end].all() and batch["loss_mask"][
                b, k
            ].sum() == len(response)
    assert batch["example_mask"].tolist() == [1, 1, 1, 1]


def test_each_epoch_visits_every_example_once_and_drops_the_remainder():
    loader = _loader(_split())
    for epoch in range(2):
        steps = range(epoch * loader.steps_per_epoch, (epoch + 1) * loader.steps_per_epoch)
        seen = np.concatenate([loader.batch(s)["index"] for s in steps])
        assert len(seen) == 20 and len(set(seen.tolist())) == 20  # 21 examples, remainder of 1 dropped


def test_shuffle_is_fixed_by_seed_and_changes_across_epochs():
    split = _split()
    first, again, other_seed = _loader(split), _loader(split), _loader(split, seed=4)
    epoch0 = [first.global_rows(s).tolist() for s in range(5)]
    epoch1 = [first.global_rows(s).tolist() for s in range(5, 10)]
    assert epoch0 != epoch1
    assert [again.global_rows(s).tolist() for s in range(5)] == epoch0
    assert [other_seed.global_rows(s).tolist() for s in range(5)] != epoch0


def _splitmix64(value: int) -> int:
    mask = (1 << 64) - 1
    z = (value + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_permutation_is_pinned():
    # Resuming relies on this order never changing: pinned values, and a plain-Python re-derivation.
    assert epoch_permutation(10, seed=0, epoch=0).tolist() == [1, 4, 5, 7, 6, 9, 0, 3, 2, 8]
    seed, epoch = 7, 3
    stream = _splitmix64(seed << 32 | epoch)
    expected = sorted(range(1000), key=lambda i: (_splitmix64(i ^ stream), i))
    assert epoch_permutation(1000, seed=seed, epoch=epoch).tolist() == expected


def test_resume_from_a_saved_position_gives_the_same_batches():
    split = _split()
    run = _loader(split)
    expected = [run.batch(step) for step in range(7, 12)]
    saved = json.loads(json.dumps(run.position(7)))  # as a checkpoint stores it
    assert saved["epoch"] == 1 and saved["step_in_epoch"] == 2
    resumed = _loader(split)
    start = resumed.check_position(saved)
    assert start == 7
    for step, batch in zip(range(start, 12), expected):
        _assert_batches_equal(resumed.batch(step), batch)
    first = next(resumed.iterate(start))
    _assert_batches_equal(first, expected[0])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(fingerprint="other data"), "dataset_fingerprint"),
        (dict(seed=99), "seed"),
        (dict(batch=2), "global_batch_size"),
    ],
)
def test_resume_refuses_a_position_from_another_setup(change, message):
    saved = _loader(_split()).position(3)
    with pytest.raises(ValueError, match=message):
        _loader(_split(), **change).check_position(saved)
    with pytest.raises(ValueError, match="integer 'step'"):
        _loader(_split()).check_position({"epoch": 0})


def test_resume_on_different_data_is_refused(tokenizer):
    hh = build_datasets(data_config(eval_split=""), tokenizer, stage="dpo")
    shorter = build_datasets(data_config(eval_split="", max_length=96), tokenizer, stage="dpo")
    position = make_train_loader(hh, global_batch_size=4, seed=0, process_index=0, process_count=1).position(
        2
    )
    loader = make_train_loader(shorter, global_batch_size=4, seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="different data"):
        loader.check_position(position)


def test_batch_size_must_divide_by_process_count():
    with pytest.raises(ValueError, match="global_batch_size=6.*process_count=4"):
        _loader(_split(), batch=6, process_count=4)
    with pytest.raises(ValueError, match="process_index=2"):
        _loader(_split(), process_index=2, process_count=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _loader(_split(3), batch=4)


def _eval(split, *, process_index=0, process_count=1, batch=8):
    return EvalBatches(
        split,
        global_batch_size=batch,
        process_index=process_index,
        process_count=process_count,
        pad_id=PAD,
        max_length=16,
    )


def test_eval_covers_every_example_once_and_pads_the_last_batch():
    split = _split(13)
    batches = list(_eval(split))
    assert len(batches) == 2
    mask = np.concatenate([b["example_mask"] for b in batches])
    index = np.concatenate([b["index"] for b in batches])
    assert index[mask == 1].tolist() == list(range(13))
    filler = batches[-1]["example_mask"] == 0
    assert filler.sum() == 3
    assert batches[-1]["loss_mask"][filler].sum() == 0
    assert (batches[-1]["attention_mask"][filler].sum(-1) > 0).all()  # never an all-masked row


def test_eval_batches_split_across_processes():
    split = _split(13)
    single = list(_eval(split))
    halves = [list(_eval(split, process_index=p, process_count=2)) for p in range(2)]
    for step, batch in enumerate(single):
        joined = {key: np.concatenate([h[step][key] for h in halves]) for key in batch}
        _assert_batches_equal(batch, joined)


def test_padded_batches_are_max_length_wide_and_take_no_length_buckets(tokenizer):
    """One shape for every step and eval batch (one compile); shorter rows are packing's job, and the
    length buckets the trainer never used are gone rather than accepted and ignored."""
    split = _split()
    assert {_loader(split).batch(step)["input_ids"].shape for step in range(5)} == {(4, 2, 16)}
    assert {batch["input_ids"].shape for batch in _eval(_split(13))} == {(8, 2, 16)}
    prepared = build_datasets(data_config(eval_split=""), tokenizer, stage="dpo")
    with pytest.raises(TypeError, match="length_buckets"):
        make_train_loader(
            prepared, global_batch_size=4, seed=0, process_index=0, process_count=1, length_buckets=(8,)
        )
    with pytest.raises(TypeError, match="length_buckets"):
        make_eval_batches(
            prepared,
            global_batch_size=4,
            process_index=0,
            process_count=1,
            split="train",
            length_buckets=(8,),
        )


def test_with_data_keeps_the_order_and_adds_extras(tokenizer):
    prepared = build_datasets(data_config(eval_split=""), tokenizer, stage="dpo")
    loader = make_train_loader(prepared, global_batch_size=4, seed=0, process_index=0, process_count=1)
    logps = np.arange(prepared.train.num_examples * 2, dtype=np.float32).reshape(-1, 2)
    with_logps = dataclasses.replace(prepared, train=prepared.train.with_extras(reference_logps=logps))
    new_loader = loader.with_data(with_logps)
    batch, plain = new_loader.batch(5), loader.batch(5)
    np.testing.assert_array_equal(batch["input_ids"], plain["input_ids"])
    np.testing.assert_array_equal(batch["reference_logps"], logps[loader.global_rows(5)])
    with pytest.raises(ValueError, match="clashes"):
        prepared.train.with_extras(loss_mask=logps)


def test_a_train_set_smaller_than_one_global_batch_names_the_split_the_file_and_the_counts(
    tmp_path, tokenizer
):
    pair = {"prompt": "Q:", "chosen": " good", "rejected": " bad"}
    rows = [{**pair, "prompt": f"Q{i}:"} for i in range(5)] + [{"prompt": "Q:"}]  # one bad row
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    prepared = build_datasets(data_config(source="local", path=path, eval_split=""), tokenizer, stage="dpo")
    with pytest.raises(UserError) as raised:
        make_train_loader(prepared, global_batch_size=8, seed=0, process_index=0, process_count=1)
    assert str(raised.value).startswith(
        f"the train split ({path}) has 5 usable examples (6 rows read), fewer than one global batch of 8"
    )
