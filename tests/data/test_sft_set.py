"""SFT on preference data: one example per distinct prompt, the reference implementation's SFT set.

HH-like pairs: the chosen response of the prompt's last row, rows unusable for DPO included (an empty or
mismatched rejected response). SHP: the prompt's best-scored response over its kept rows, ties to the
earliest. One-response data keeps every row. Merged rows are counted with their line.
"""

import pytest

from dpo_jax.data import build_datasets
from tests.data.data_helpers import data_config, write_jsonl


def hh_row(question: str, chosen: str, rejected: str, rejected_question: str | None = None) -> dict:
    prompt = f"\n\nHuman: {question}\n\nAssistant:"
    other = f"\n\nHuman: {rejected_question or question}\n\nAssistant:"
    return {"chosen": prompt + chosen, "rejected": other + rejected}


def sft_set(tokenizer, tmp_path, source: str, rows: list[dict], stage: str = "sft"):
    path = write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    prepared = build_datasets(
        data_config(source=source, path=str(tmp_path / "data"), eval_split=""), tokenizer, stage=stage
    )
    texts = [
        (
            tokenizer.decode(prepared.train.prompt(i)),
            tokenizer.decode(prepared.train.response(i, 0)).removesuffix(tokenizer.eos_token),
        )
        for i in range(prepared.train.num_examples)
    ]
    return texts, prepared.train_report, path


def merged_rows(report) -> list[tuple[int, str]]:
    return [(s["row"], s["detail"]) for s in report.samples if s["reason"] == "merged_prompt"]


def test_hh_one_example_per_prompt_from_its_last_row_even_if_unusable_for_dpo(tokenizer, tmp_path):
    rows = [
        hh_row("Q1", " first answer", " bad one"),
        hh_row("Q2", " kept answer", ""),  # empty rejected response: no DPO pair, still an SFT row
        hh_row("Q1", " second answer", " worse one"),
        hh_row("Q3", " only answer", " off topic", rejected_question="another question"),  # prompt mismatch
        hh_row("Q2", " same", " same"),  # identical responses
        hh_row("Q4", "", " nothing"),  # an empty chosen response is bad for SFT too
    ]
    texts, report, path = sft_set(tokenizer, tmp_path, "hh", rows)
    assert texts == [
        ("\n\nHuman: Q1\n\nAssistant:", " second answer"),
        ("\n\nHuman: Q2\n\nAssistant:", " same"),
        ("\n\nHuman: Q3\n\nAssistant:", " only answer"),
    ]
    assert report.counts == {"merged_prompt": 2, "empty_field": 1}
    assert (report.rows_read, report.examples_kept, report.num_filtered) == (6, 3, 2)
    assert merged_rows(report) == [
        (1, f"one SFT example per prompt: this prompt's target is {path} line 3's"),
        (2, f"one SFT example per prompt: this prompt's target is {path} line 5's"),
    ]
    assert report.metrics()["data/train/filtered/merged_prompt"] == 2

    _, dpo_report, _ = sft_set(tokenizer, tmp_path, "hh", rows, stage="dpo")
    assert dpo_report.examples_kept == 2 and "merged_prompt" not in dpo_report.counts
    assert dpo_report.counts == {
        "empty_field": 2,
        "prompt_mismatch": 1,
        "identical_responses": 1,
    }


def shp_row(history, ref_a, score_a, ref_b, score_b, **extra) -> dict:
    ratio = max(score_a / score_b, score_b / score_a)
    row = dict(history=history, human_ref_A=ref_a, human_ref_B=ref_b, score_A=score_a, score_B=score_b)
    return {**row, "labels": int(score_a > score_b), "score_ratio": ratio, **extra}


def test_shp_target_is_the_best_scored_response_over_the_prompts_kept_rows(tokenizer, tmp_path):
    rows = [
        shp_row("H1", "x", 10, "y", 2),
        shp_row("H1", "z", 3, "w", 30),  # w beats x: the best score, though not row 1's preferred
        shp_row("H1", "louder", 100, "q", 60),  # ratio 1.67 < 2: filtered before, as in the reference
        shp_row("H2", "p", 8, "q2", 2),
        shp_row("H2", "r", 2, "s", 8),  # s ties p: the earlier row's wins
        {**shp_row("H3", "m", 5, "n", 1), "score_A": None},
    ]
    texts, report, path = sft_set(tokenizer, tmp_path, "shp", rows)
    assert texts == [("\n\nHuman: H1\n\nAssistant:", " w"), ("\n\nHuman: H2\n\nAssistant:", " p")]
    assert report.counts == {"merged_prompt": 2, "filtered_score_ratio": 1, "missing_field": 1}
    assert [row for row, _ in merged_rows(report)] == [1, 5]
    assert merged_rows(report)[0][1].endswith(f"{path} line 2's")


@pytest.mark.parametrize(
    "source, rows, expected, merged",
    [
        (  # TL;DR comparisons: many pairs per post, the last one's preferred summary
            "tldr_comparisons",
            [
                {"prompt": "POST: a\nTL;DR:", "chosen": "TL;DR: s1", "rejected": "TL;DR: s2"},
                {"prompt": "POST: a\nTL;DR:", "chosen": "TL;DR: s3", "rejected": ""},
            ],
            [("POST: a\nTL;DR:", " s3")],
            1,
        ),
        (  # local pairs: as HH
            "local",
            [
                {"prompt": "a", "chosen": " c1", "rejected": " r1"},
                {"prompt": "b", "chosen": " d1", "rejected": " d1"},
                {"prompt": "a", "chosen": " c2", "rejected": ""},
            ],
            [("a", " c2"), ("b", " d1")],
            1,
        ),
        (  # local ranked lists: the best response of the prompt's last row
            "local",
            [{"prompt": "a", "responses": [" x1", " y1", " z1"]}, {"prompt": "a", "responses": [" x2", ""]}],
            [("a", " x2")],
            1,
        ),
        (  # one response per row: every row is its own demonstration
            "local",
            [{"prompt": "a", "completion": " u"}, {"prompt": "a", "completion": " v"}],
            [("a", " u"), ("a", " v")],
            0,
        ),
    ],
    ids=["tldr_comparisons", "local_pairs", "local_ranked", "local_completion"],
)
def test_other_sources(tokenizer, tmp_path, source, rows, expected, merged):
    texts, report, _ = sft_set(tokenizer, tmp_path, source, rows)
    assert texts == expected
    assert report.counts.get("merged_prompt", 0) == merged and report.num_bad == 0


@pytest.mark.parametrize("output_format", ["pairs", "ranked"])
def test_make_pairs_output_trains_on_the_best_scored_continuation_whatever_the_row_order(
    tokenizer, tmp_path, output_format
):
    """Issue 22 item 1: make_pairs writes a prompt's pairs in ranked combination order, whose last row's
    chosen continuation is the 3rd best of 4; its scores make preferred-FT train on the best one."""
    from dpo_jax.analysis.sentiment_pairs import preference_records

    continuations = [" mid", " best", " low", " worst"]
    scores = [0.7, 0.9, 0.4, 0.1]
    records, _ = preference_records(
        ["a", "b"], [continuations, continuations[::-1]], [scores, scores[::-1]], output_format=output_format
    )
    for rows in (records, records[::-1]):
        texts, report, _ = sft_set(tokenizer, tmp_path, "local", rows)
        assert sorted(texts) == [("a", " best"), ("b", " best")]
        assert report.num_bad == 0


@pytest.mark.parametrize(
    "row, field",
    [
        ({"prompt": "a", "chosen": " c", "rejected": " r", "chosen_score": "high"}, "chosen_score"),
        ({"prompt": "a", "responses": [" x", " y"], "scores": [1.0]}, "scores"),
        ({"prompt": "a", "responses": [" x", " y"], "scores": [True, 0.0]}, "scores[0]"),
    ],
)
def test_a_bad_score_is_a_bad_row(tokenizer, tmp_path, row, field):
    good = {"prompt": "b", "chosen": " fine", "rejected": " worse"}
    if "responses" in row:
        good = {"prompt": "b", "responses": [" fine", " worse"]}
    texts, report, _ = sft_set(tokenizer, tmp_path, "local", [row, good])
    assert texts == [("b", " fine")] and report.counts == {"bad_value": 1}
    assert {s["field"] for s in report.samples} == {field}
