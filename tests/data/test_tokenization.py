"""The reference tokenisation rule, token for token, and the batch layout it produces."""

import numpy as np
import pytest

from dpo_jax.data import build_datasets, make_eval_batches, truncate_example
from dpo_jax.data.report import BadInputReport, RowLocation
from dpo_jax.data.sources import Example
from dpo_jax.data.tokenization import TokenizeSettings, tokenize_examples
from tests.data.data_helpers import data_config, write_jsonl

EOS = 0
PROMPT = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
CHOSEN = [11, 12, 13, EOS]
REJECTED = [21, 22, EOS]


def _truncate(prompt, responses, max_length, max_prompt_length, mode):
    return truncate_example(
        prompt, responses, max_length=max_length, max_prompt_length=max_prompt_length, truncation_mode=mode
    )


def test_nothing_is_cut_when_everything_fits():
    assert _truncate(PROMPT, [CHOSEN, REJECTED], 14, 6, "keep_end") == (PROMPT, [CHOSEN, REJECTED])


def test_prompt_keeps_its_end_for_dialogue():
    # 10 + 4 > 12: the prompt goes down to its last 6 tokens; 6 + 4 fits, responses are untouched.
    assert _truncate(PROMPT, [CHOSEN, REJECTED], 12, 6, "keep_end") == (
        [5, 6, 7, 8, 9, 10],
        [CHOSEN, REJECTED],
    )


def test_prompt_keeps_its_start_for_keep_start():
    assert _truncate(PROMPT, [CHOSEN, REJECTED], 12, 6, "keep_start") == (
        [1, 2, 3, 4, 5, 6],
        [CHOSEN, REJECTED],
    )


def test_responses_are_cut_to_max_length_minus_max_prompt_length():
    # 6 + 4 > 8 even after the prompt cut: responses keep their first 8 - 6 = 2 tokens (EOS is lost).
    assert _truncate(PROMPT, [CHOSEN, REJECTED], 8, 6, "keep_end") == (
        [5, 6, 7, 8, 9, 10],
        [[11, 12], [21, 22]],
    )
    assert _truncate(PROMPT, [CHOSEN, REJECTED], 8, 6, "keep_start") == (
        [1, 2, 3, 4, 5, 6],
        [[11, 12], [21, 22]],
    )


def test_short_prompt_with_long_response_uses_the_reference_budget():
    long_response = list(range(30, 40)) + [EOS]
    # The 3-token prompt is not cut; the response gets max_length - max_prompt_length = 4 tokens, as the
    # reference does, not the 5 this prompt would leave.
    assert _truncate([1, 2, 3], [long_response], 8, 4, "keep_end") == ([1, 2, 3], [[30, 31, 32, 33]])


def test_unknown_truncation_mode_is_an_error():
    with pytest.raises(ValueError, match="truncation_mode"):
        _truncate(PROMPT, [CHOSEN], 8, 4, "middle")


def _one_pair_dataset(tmp_path, prompt, chosen, rejected):
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return write_jsonl(tmp_path / "pairs" / "train.jsonl", [row] * 2)


@pytest.mark.parametrize("mode", ["keep_end", "keep_start"])
def test_batch_is_token_exact(tmp_path, tokenizer, mode):
    prompt, chosen, rejected = "Question: why is the sky blue?\nAnswer:", " Light scatters.", " It is not."
    path = _one_pair_dataset(tmp_path, prompt, chosen, rejected)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt_ids, chosen_ids, rejected_ids = ids(prompt), ids(chosen), ids(rejected)
    max_prompt_length = len(prompt_ids) - 3
    max_length = max_prompt_length + len(chosen_ids) + 1 + 2  # forces the prompt cut, not the response cut
    config = data_config(
        source="local", path=path, eval_split=path, max_length=max_length, max_prompt_length=max_prompt_length
    )
    config.truncation_mode = mode
    prepared = build_datasets(config, tokenizer, stage="dpo")
    batch = next(iter(make_eval_batches(prepared, global_batch_size=2, process_index=0, process_count=1)))

    kept = prompt_ids[3:] if mode == "keep_end" else prompt_ids[:max_prompt_length]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for k, response in enumerate([chosen_ids, rejected_ids]):
        sequence = kept + response + [eos]
        expected_ids = sequence + [pad] * (max_length - len(sequence))
        expected_attention = [1] * len(sequence) + [0] * (max_length - len(sequence))
        expected_loss = [0] * len(kept) + [1] * (len(response) + 1) + [0] * (max_length - len(sequence))
        np.testing.assert_array_equal(batch["input_ids"][0, k], expected_ids)
        np.testing.assert_array_equal(batch["attention_mask"][0, k], expected_attention)
        np.testing.assert_array_equal(batch["loss_mask"][0, k], expected_loss)
    assert {key: value.dtype for key, value in batch.items()} == {
        "input_ids": np.int32,
        "attention_mask": np.int32,
        "loss_mask": np.int32,
        "example_mask": np.int32,
        "example_index": np.int32,  # where each row's results go in a pass over the split
    }


def test_loss_mask_counts_eos_although_pad_is_eos(tmp_path, tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    path = _one_pair_dataset(tmp_path, "Q:", " yes", " no")
    config = data_config(source="local", path=path, eval_split=path, max_length=32, max_prompt_length=16)
    prepared = build_datasets(config, tokenizer, stage="dpo")
    batch = next(iter(make_eval_batches(prepared, global_batch_size=2, process_index=0, process_count=1)))
    for k in range(2):
        ids, loss = batch["input_ids"][0, k], batch["loss_mask"][0, k]
        eos_positions = np.flatnonzero(ids == tokenizer.eos_token_id)
        last_response = np.flatnonzero(loss)[-1]
        # The first EOS is the response's own and counts; every later one is padding and does not.
        assert loss[eos_positions[0]] == 1 and eos_positions[0] == last_response
        assert loss[eos_positions[1:]].sum() == 0
        assert loss.sum() == prepared.train.response_lengths()[0, k]


def _tokenize(tokenizer, examples, **settings):
    report = BadInputReport(split="train")
    located = [(RowLocation("mem", i), example) for i, example in enumerate(examples)]
    split = tokenize_examples(located, tokenizer, TokenizeSettings(**settings), report=report)
    return split, report


def test_prompt_that_leaves_no_room_is_counted(tokenizer):
    long_prompt = "word " * 40
    examples = [Example(long_prompt, (" a", " b")), Example("Q:", (" a", " b"))]
    split, report = _tokenize(
        tokenizer, examples, max_length=16, max_prompt_length=16, truncation_mode="keep_end"
    )
    assert split.num_examples == 1
    assert report.counts == {"no_room_for_response": 1}
    assert report.samples[0]["row"] == 0


def test_eos_inside_the_text_is_counted(tokenizer):
    examples = [Example("Q:", (" a<|endoftext|>b", " c")), Example("Q<|endoftext|>:", (" a", " b"))]
    split, report = _tokenize(
        tokenizer, examples, max_length=16, max_prompt_length=8, truncation_mode="keep_end"
    )
    assert split.num_examples == 0
    assert report.counts == {"eos_in_text": 2}
    assert [s["field"] for s in report.samples] == ["responses[0]", "prompt"]


def test_prompt_only_examples_have_empty_responses(tokenizer):
    examples = [Example("one two three four five six seven", ()), Example("", ())]
    split, report = _tokenize(
        tokenizer,
        examples,
        max_length=16,
        max_prompt_length=4,
        truncation_mode="keep_start",
        prompt_only=True,
    )
    assert split.num_responses == 1
    assert split.prompt(0).tolist() == tokenizer("one two three four five six seven")["input_ids"][:4]
    assert split.response_lengths().tolist() == [[0]]
    assert report.counts == {"empty_field": 1}


def test_limit_stops_after_enough_examples(tokenizer):
    examples = [Example(f"Q{i}:", (" a", " b")) for i in range(10)]
    report = BadInputReport(split="train")
    located = [(RowLocation("mem", i), e) for i, e in enumerate(examples)]
    settings = TokenizeSettings(max_length=16, max_prompt_length=8, truncation_mode="keep_end")
    split = tokenize_examples(located, tokenizer, settings, report=report, limit=3)
    assert split.num_examples == 3 and report.examples_kept == 3
    assert split.head(2).num_examples == 2
    assert split.head(2).prompt(1).tolist() == split.prompt(1).tolist()


def test_kept_examples_cut_by_the_length_limits_are_counted(tokenizer):
    long_prompt, long_response = "word " * 12, " more" * 12
    examples = [
        Example("Q:", (" a", " b")),  # fits
        Example(long_prompt, (" a", " b")),  # fits only once its prompt is cut
        Example("Q:", (long_response, " b")),  # the chosen response is cut
        Example(long_prompt, (long_response, " b")),  # both
    ]
    split, report = _tokenize(
        tokenizer, examples, max_length=16, max_prompt_length=8, truncation_mode="keep_end"
    )
    assert split.num_examples == 4 and report.counts == {}
    assert report.truncated == {"truncated_prompt": 2, "truncated_response": 2}
    metrics = report.metrics()
    assert (metrics["data/train/truncated_prompt"], metrics["data/train/truncated_response"]) == (2, 2)
    assert "length limits cut 2 prompts and the responses of 2 examples" in report.summary()


def test_the_rows_the_length_limits_cut_are_named(tokenizer, caplog):
    import logging

    examples = [
        Example("Q:", (" a", " b")),
        Example("word " * 10, (" a", " b " * 10)),
        Example("Q:", (" a", " b")),
    ]
    split, report = _tokenize(
        tokenizer, examples, max_length=16, max_prompt_length=8, truncation_mode="keep_end"
    )
    assert split.num_examples == 3 and report.truncated == {"truncated_prompt": 1, "truncated_response": 1}
    cut = report.truncated_samples
    assert [(s["parts"], s["row"]) for s in cut] == [(["truncated_prompt", "truncated_response"], 1)]
    prompt, response = (
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ("word " * 10, " b " * 10)
    )
    detail = f"prompt {prompt} -> 8 tokens; responses {response + 1} -> 8 tokens (EOS included)"
    assert cut[0]["detail"] == detail
    with caplog.at_level(logging.INFO):
        report.log(logging.getLogger("test"), source="local")
    assert f"kept mem row 1, cut by the length limits: {detail}" in caplog.text
