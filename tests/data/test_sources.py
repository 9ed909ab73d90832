"""Source adapters on their shipped fixtures (awkward rows included), and the hub-loading branch."""

import datasets
import pytest

from dpo_jax import UserError
from dpo_jax.data import build_datasets, fixture_dir, load_tokenizer, read_examples
from dpo_jax.data.local_schemas import ChatRenderer, parse_pair
from dpo_jax.data.report import BadRow
from dpo_jax.data.sources import (
    ParseOptions,
    parse_cnn_dailymail,
    parse_hh,
    parse_imdb_prefix,
    parse_shp,
    parse_summarize_from_feedback,
)
from tests.data.data_helpers import data_config, read_jsonl, write_jsonl

# (source, fixture, stage, train examples, eval examples, K, train counts per reason, eval counts)
FIXTURE_CASES = [
    (
        "hh",
        "hh",
        "dpo",
        27,
        12,
        2,
        {
            "identical_responses": 1,
            "prompt_mismatch": 1,
            "empty_field": 2,
            "not_a_string": 1,
            "missing_field": 2,
            "no_assistant_turn": 1,
            "eos_in_text": 1,
        },
        {"prompt_mismatch": 1},
    ),
    (
        "tldr_comparisons",
        "tldr_comparisons",
        "dpo",
        15,
        6,
        2,
        {"identical_responses": 1, "missing_field": 1, "empty_field": 1, "not_a_string": 1},
        {},
    ),
    (
        "summarize_from_feedback",
        "summarize_from_feedback",
        "dpo",
        14,
        6,
        2,
        {"bad_value": 2, "missing_field": 1, "identical_responses": 1},
        {},
    ),
    ("tldr_sft", "tldr_sft", "sft", 14, 6, 1, {"empty_field": 1, "missing_field": 1}, {}),
    ("cnn_dailymail", "cnn_dailymail", "sft", 3, 6, 1, {"missing_field": 1, "empty_field": 1}, {}),
    ("imdb", "imdb", "sft", 16, 8, 1, {"empty_field": 1, "missing_field": 1, "not_a_string": 1}, {}),
    (
        "imdb_prefixes",
        "imdb",
        "prompts",
        16,
        8,
        1,
        {"empty_field": 1, "missing_field": 1, "not_a_string": 1},
        {},
    ),
    (
        "shp",
        "shp",
        "dpo",
        18,
        12,
        2,
        {"filtered_score_ratio": 3, "identical_responses": 1, "empty_field": 1, "bad_value": 1},
        {"filtered_score_ratio": 1},
    ),
    (
        "local",
        "local",
        "dpo",
        20,
        10,
        2,
        {"missing_field": 1, "identical_responses": 1, "not_a_string": 1},
        {},
    ),
    (
        "local",
        "local_ranked",
        "dpo",
        20,
        10,
        3,
        {"response_count_mismatch": 1, "bad_value": 1, "empty_field": 1},
        {},
    ),
    ("local", "local_chat", "dpo", 20, 10, 2, {"prompt_mismatch": 1, "bad_value": 1, "not_a_string": 1}, {}),
]


@pytest.mark.parametrize("case", FIXTURE_CASES, ids=[f"{c[1]}-{c[2]}" for c in FIXTURE_CASES])
def test_fixture_counts_per_reason(case, tokenizer):
    source, fixture, stage, n_train, n_eval, k, train_counts, eval_counts = case
    eval_split = "validation" if fixture == "summarize_from_feedback" else "test"  # as on the hub
    config = data_config(source=source, path=f"fixture:{fixture}", eval_split=eval_split)
    prepared = build_datasets(config, tokenizer, stage=stage)
    assert prepared.train.num_examples == n_train
    assert prepared.eval.num_examples == n_eval
    assert prepared.num_responses == k
    assert prepared.train_report.counts == train_counts
    assert prepared.eval_report.counts == eval_counts
    # Every row read is either kept or counted: nothing is dropped silently.
    for report in (prepared.train_report, prepared.eval_report):
        assert report.rows_read == report.examples_kept + sum(report.counts.values())


def test_bad_rows_name_file_row_and_field(tokenizer):
    report = build_datasets(data_config(), tokenizer, stage="dpo").train_report
    by_reason = {sample["reason"]: sample for sample in report.samples}
    mismatch = by_reason["prompt_mismatch"]
    assert mismatch["file"].endswith("hh/train.jsonl")
    assert mismatch["field"] == "rejected"
    assert mismatch["unit"] == "line"  # 1-based, as an editor shows it
    assert read_jsonl(mismatch["file"])[mismatch["row"] - 1]["chosen"].startswith("\n\nHuman:")
    assert by_reason["not_a_string"]["field"] == "rejected"


def test_a_news_article_is_a_tldr_prompt_and_its_highlights_one_line():
    """Issue 22 item 10: CNN/DailyMail in its own schema, for the TL;DR policy's out-of-distribution test."""
    row = read_jsonl(fixture_dir("cnn_dailymail") + "/test.jsonl")[0]
    assert set(row) == {"article", "highlights", "id"}
    example = parse_cnn_dailymail({**row, "article": "A  story.\n\nIt ends."}, ParseOptions())
    assert example.prompt == "ARTICLE: A story. It ends.\nTL;DR:"
    assert example.responses == (" " + " ".join(row["highlights"].split("\n")),)
    assert "\n" not in example.responses[0]


def test_hh_multi_turn_prompt_ends_at_last_assistant_turn():
    row = read_jsonl(fixture_dir("hh") + "/train.jsonl")[20]  # the first multi-turn dialogue
    example = parse_hh(row, ParseOptions())
    assert example.prompt.count("\n\nHuman:") == 2
    assert example.prompt.endswith("\n\nAssistant:")
    assert row["chosen"] == example.prompt + example.responses[0]
    assert row["rejected"] == example.prompt + example.responses[1]
    assert example.responses[0].startswith(" ")


def test_hh_rejected_with_other_prompt_is_a_prompt_mismatch():
    row = {"chosen": "\n\nHuman: a?\n\nAssistant: yes", "rejected": "\n\nHuman: b?\n\nAssistant: no"}
    with pytest.raises(BadRow) as error:
        parse_hh(row, ParseOptions())
    assert (error.value.reason, error.value.field) == ("prompt_mismatch", "rejected")


def test_shp_orders_responses_by_labels_and_filters_by_ratio():
    row = {"history": "Why?", "human_ref_A": "a", "human_ref_B": "b", "labels": 0, "score_ratio": 3.0}
    example = parse_shp(row, ParseOptions())
    assert example.prompt == "\n\nHuman: Why?\n\nAssistant:"
    assert example.responses == (" b", " a")
    assert parse_shp({**row, "labels": 1}, ParseOptions()).responses == (" a", " b")
    with pytest.raises(BadRow) as error:
        parse_shp({**row, "score_ratio": 1.9}, ParseOptions())
    assert error.value.reason == "filtered_score_ratio"
    assert parse_shp({**row, "score_ratio": 1.9}, ParseOptions(shp_min_score_ratio=1.5)).responses == (
        " b",
        " a",
    )


def test_shp_fixture_has_the_full_hub_schema():
    columns = {
        "post_id", "domain", "upvote_ratio", "history", "c_root_id_A", "c_root_id_B", "created_at_utc_A",
        "created_at_utc_B", "score_A", "score_B", "human_ref_A", "human_ref_B", "labels",
        "seconds_difference", "score_ratio",
    }  # fmt: skip
    for split in ("train", "test"):
        assert all(set(row) == columns for row in read_jsonl(f"{fixture_dir('shp')}/{split}.jsonl"))


def test_summarize_from_feedback_puts_the_chosen_summary_first():
    row = read_jsonl(fixture_dir("summarize_from_feedback") + "/train.jsonl")[1]
    assert row["choice"] == 1
    example = parse_summarize_from_feedback(row, ParseOptions())
    assert example.responses == (
        " " + row["summaries"][1]["text"].strip(),
        " " + row["summaries"][0]["text"].strip(),
    )
    assert example.prompt.startswith(f"SUBREDDIT: r/{row['info']['subreddit']}\nTITLE: ")
    assert example.prompt.endswith("\nTL;DR:")


def test_tldr_sources_share_one_prompt_format(tokenizer):
    lengths = dict(max_length=512, max_prompt_length=256)  # no truncation
    comparisons = build_datasets(
        data_config(source="tldr_comparisons", path="fixture:tldr_comparisons", **lengths),
        tokenizer,
        stage="dpo",
    )
    sft = build_datasets(
        data_config(source="tldr_sft", path="fixture:tldr_sft", **lengths), tokenizer, stage="sft"
    )
    # Row 0 of both fixtures is the same post: its prompt must tokenise identically in both stages.
    assert comparisons.train.prompt(0).tolist() == sft.train.prompt(0).tolist()
    assert tokenizer.decode(sft.train.prompt(0)).endswith("\nTL;DR:")
    assert tokenizer.decode(sft.train.response(0, 0)).startswith(" ")


def test_imdb_prefixes_are_short_and_deterministic():
    options = ParseOptions()
    for row in read_jsonl(fixture_dir("imdb") + "/train.jsonl")[:16]:
        first = parse_imdb_prefix(row, options)
        assert first == parse_imdb_prefix(row, options)
        assert first.responses == ()
        assert 2 <= len(first.prompt.split()) <= 8
        assert row["text"].startswith(first.prompt)


def test_imdb_reviews_have_an_empty_prompt(tokenizer):
    prepared = build_datasets(data_config(source="imdb", path="fixture:imdb"), tokenizer, stage="sft")
    assert prepared.train.prompt_lengths().max() == 0
    assert prepared.num_responses == 1


def test_chat_pairs_render_with_the_chat_template(tokenizer):
    renderer = ChatRenderer(tokenizer)
    options = ParseOptions(chat_renderer=renderer)
    row = read_jsonl(fixture_dir("local_chat") + "/train.jsonl")[0]
    example = parse_pair(row, options)
    question, best, worst = (
        row["chosen"][0]["content"],
        row["chosen"][1]["content"],
        row["rejected"][1]["content"],
    )
    assert example.prompt == f"<|user|>\n{question}\n<|assistant|>\n"
    assert example.responses == (best, worst)
    # A row with an explicit prompt list and one assistant message each renders the same way.
    split_row = {"prompt": row["chosen"][:1], "chosen": row["chosen"][1:], "rejected": row["rejected"][1:]}
    assert parse_pair(split_row, options) == example


def test_chat_messages_and_completion_schemas_for_sft(tmp_path, tokenizer):
    conversation = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    path = write_jsonl(
        tmp_path / "chat" / "train.jsonl", [{"messages": conversation}] * 3 + [{"messages": []}]
    )
    prepared = build_datasets(data_config(source="local", path=path, eval_split=""), tokenizer, stage="sft")
    assert prepared.train.num_examples == 3
    assert prepared.train_report.counts == {"empty_field": 1}
    assert tokenizer.decode(prepared.train.response(0, 0)) == "Hello.<|endoftext|>"
    path = write_jsonl(tmp_path / "completion.jsonl", [{"prompt": "Q:", "completion": " A"}] * 2)
    prepared = build_datasets(data_config(source="local", path=path, eval_split=""), tokenizer, stage="sft")
    assert prepared.train.num_examples == 2
    with pytest.raises(ValueError, match="one response per prompt"):
        build_datasets(data_config(source="local", path=path, eval_split=""), tokenizer, stage="dpo")


def test_chat_rows_need_a_chat_template(tmp_path, tokenizer):
    plain = load_tokenizer("tiny")
    plain.chat_template = None
    path = write_jsonl(tmp_path / "train.jsonl", read_jsonl(fixture_dir("local_chat") + "/train.jsonl")[:4])
    with pytest.raises(ValueError, match="train.jsonl line 1: .*chat_template"):
        build_datasets(data_config(source="local", path=path, eval_split=""), plain, stage="dpo")


def _fake_load_dataset(monkeypatch, rows):
    calls = []

    def fake(*args, split=None, **kwargs):
        calls.append((args, split, kwargs))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return calls


def test_hub_name_is_loaded_with_load_dataset(monkeypatch, tokenizer):
    rows = read_jsonl(fixture_dir("hh") + "/train.jsonl")[:24]
    calls = _fake_load_dataset(monkeypatch, rows)
    prepared = build_datasets(data_config(path=""), tokenizer, stage="dpo")  # "" = the source's hub name
    assert calls == [(("Anthropic/hh-rlhf",), "train", {}), (("Anthropic/hh-rlhf",), "test", {})]
    assert prepared.train.num_examples == 24
    assert prepared.train_report.samples == []


def test_hub_dataset_with_a_config_name(monkeypatch, tokenizer):
    rows = read_jsonl(fixture_dir("summarize_from_feedback") + "/train.jsonl")[:14]
    calls = _fake_load_dataset(monkeypatch, rows)
    config = data_config(
        source="summarize_from_feedback", path="openai/summarize_from_feedback", eval_split=None
    )
    build_datasets(config, tokenizer, stage="dpo")
    assert [(args, split) for args, split, _ in calls] == [
        (("openai/summarize_from_feedback", "comparisons"), "train"),
        (("openai/summarize_from_feedback", "comparisons"), "validation"),
    ]


def test_hub_failure_names_the_dataset(monkeypatch, tokenizer):
    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="stanfordnlp/SHP.*offline"):
        build_datasets(data_config(source="shp", path="stanfordnlp/SHP"), tokenizer, stage="dpo")


def test_hh_single_turn_subset_drops_and_counts_multi_turn_prompts():
    """data.hh_single_turn keeps the prompts of exactly one human turn (the paper's single-turn HH
    subset), in order; every other usable row is a filtered row of the data report, by reason."""
    everything, full_report = read_examples(data_config(), split="train")
    single, report = read_examples(data_config(hh_single_turn=True), split="train")
    want = [e for e in everything if e.prompt.count("\n\nHuman:") == 1]
    assert len(want) < len(everything)  # the fixture has multi-turn dialogues (rows 20-23)
    assert single == want
    dropped = len(everything) - len(want)
    assert report.counts["filtered_not_single_turn"] == dropped
    assert report.num_filtered == full_report.num_filtered + dropped
    assert report.num_bad == full_report.num_bad  # malformed rows stay bad rows, counted as before
    assert report.metrics()["data/train/filtered/filtered_not_single_turn"] == dropped
    with pytest.raises(UserError, match="data.hh_single_turn=True is for data.source 'hh'"):
        read_examples(data_config(source="shp", path="fixture:shp", hh_single_turn=True))
