"""`build_datasets`: stages, config handling and the PreparedData the trainer receives."""

import ml_collections
import numpy as np
import pytest

from dpo_jax.data import build_datasets, make_eval_batches, make_train_loader
from tests.data.data_helpers import data_config


def test_sft_on_pairs_keeps_the_chosen_response(tokenizer):
    dpo = build_datasets(data_config(), tokenizer, stage="dpo")
    sft = build_datasets(data_config(), tokenizer, stage="sft")
    assert (dpo.num_responses, sft.num_responses) == (2, 1)
    # One example per distinct prompt (tests/data/test_sft_set.py): the fixture's 36 rows hold 7 repeats
    # of a prompt and 4 rows bad for SFT too; the rejected responses' faults do not count for SFT.
    assert sft.train.num_examples == 25 and sft.train_report.counts["merged_prompt"] == 7
    assert not {"identical_responses", "prompt_mismatch", "missing_field"} & set(sft.train_report.counts)
    assert sft.train.response(0, 0).tolist() == dpo.train.response(0, 0).tolist()


def test_prompts_stage_gives_distinct_prompts_without_responses(tokenizer):
    prepared = build_datasets(data_config(), tokenizer, stage="prompts")
    assert prepared.prompt_only and prepared.num_responses == 1
    assert prepared.train_report.counts["duplicate_prompt"] == 3
    prompts = {tuple(prepared.train.prompt(i).tolist()) for i in range(prepared.train.num_examples)}
    assert len(prompts) == prepared.train.num_examples
    batch = next(iter(make_eval_batches(prepared, global_batch_size=4, process_index=0, process_count=1)))
    assert batch["loss_mask"].sum() == 0
    assert (batch["attention_mask"].sum(-1)[:, 0] == prepared.eval.prompt_lengths()[:4]).all()


@pytest.mark.parametrize(
    "source, stage, message",
    [("imdb_prefixes", "dpo", "use stage 'prompts'"), ("imdb", "dpo", "one response per prompt")],
)
def test_stage_and_source_must_fit(tokenizer, source, stage, message):
    with pytest.raises(ValueError, match=message):
        build_datasets(data_config(source=source, path="fixture:imdb"), tokenizer, stage=stage)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(source="reddit"), "unknown data source 'reddit'"),
        (dict(max_prompt_length=200), r"max_prompt_length \(200\) <= max_length \(128\)"),
        (dict(truncation_mode="keep_middle"), "truncation_mode"),
        (dict(source="local", path=""), "needs data.path"),
    ],
)
def test_bad_config_fails_at_start(tokenizer, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_datasets(data_config(**overrides), tokenizer, stage="dpo")
    with pytest.raises(ValueError, match="stage"):
        build_datasets(data_config(), tokenizer, stage="rlhf")


def test_config_dict_with_defaults_and_limits(tmp_path, tokenizer):
    config = ml_collections.ConfigDict(
        dict(source="shp", path="fixture:shp", max_length=128, max_prompt_length=64, max_train_examples=5)
    )
    prepared = build_datasets(config, tokenizer, stage="dpo", cache_dir=str(tmp_path))
    assert (
        prepared.train.num_examples == 5 and prepared.eval.num_examples == 12
    )  # eval split defaults to test
    assert prepared.train_report.rows_read == 24  # one chunk was read; the kept examples stop at 5
    assert list(tmp_path.glob("*.npz"))  # the cache_dir argument overrides the config's
    metrics = prepared.report_metrics()
    assert metrics["data/train/examples"] == 5 and metrics["data/eval/filtered/filtered_score_ratio"] == 1


def test_every_process_sees_the_same_shapes_on_hh(tokenizer):
    prepared = build_datasets(data_config(max_length=64, max_prompt_length=32), tokenizer, stage="dpo")
    assert prepared.train.sequence_lengths().max() <= 64
    loaders = [
        make_train_loader(prepared, global_batch_size=8, seed=1, process_index=p, process_count=2)
        for p in range(2)
    ]
    batches = [loader.batch(3) for loader in loaders]
    assert batches[0]["input_ids"].shape == batches[1]["input_ids"].shape == (4, 2, 64)
    # HH prompts keep their end: every truncated prompt still ends with the assistant tag.
    tag = np.asarray(tokenizer("\n\nAssistant:", add_special_tokens=False)["input_ids"])
    for i in range(prepared.train.num_examples):
        assert prepared.train.prompt(i)[-len(tag) :].tolist() == tag.tolist()
