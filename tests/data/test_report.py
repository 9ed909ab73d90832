"""Bad-input reports: counts per reason, first rows per reason, metrics, logging, JSON round trip."""

import json
import logging

import pytest

from dpo_jax.data.report import BadInputReport, BadRow, RowLocation


def _report_with(reasons):
    report = BadInputReport(split="train", samples_per_reason=2)
    for row, reason in enumerate(reasons, start=1):
        report.rows_read += 1
        report.record(BadRow(reason, "chosen", f"row {row}"), RowLocation("data.jsonl", row, "line"))
    return report


def test_counts_and_first_samples_per_reason():
    report = _report_with(["empty_field"] * 3 + ["filtered_score_ratio", "prompt_mismatch"])
    assert report.counts == {"empty_field": 3, "filtered_score_ratio": 1, "prompt_mismatch": 1}
    assert [s["row"] for s in report.samples if s["reason"] == "empty_field"] == [1, 2]
    assert report.samples[0] == {
        "reason": "empty_field",
        "file": "data.jsonl",
        "row": 1,
        "unit": "line",
        "field": "chosen",
        "detail": "row 1",
    }
    assert (report.num_bad, report.num_filtered) == (4, 1)


def test_metrics_are_flat_and_named_by_split_and_reason():
    report = _report_with(["empty_field", "filtered_score_ratio"])
    report.examples_kept = 7
    assert report.metrics() == {
        "data/train/rows_read": 2,
        "data/train/examples": 7,
        "data/train/bad_rows": 1,
        "data/train/filtered_rows": 1,
        "data/train/truncated_prompt": 0,
        "data/train/truncated_response": 0,
        "data/train/bad/empty_field": 1,
        "data/train/filtered/filtered_score_ratio": 1,
    }


def test_round_trips_through_json():
    report = _report_with(["not_a_string", "missing_field"])
    assert BadInputReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_log_has_one_summary_line_and_the_samples(caplog):
    report = _report_with(["prompt_mismatch"])
    with caplog.at_level(logging.INFO):
        report.log(logging.getLogger("test"), source="hh")
    assert (
        "data hh train: 1 rows read, 0 examples kept, 1 bad and 0 filtered rows (prompt_mismatch=1)"
        in caplog.text
    )
    assert "data.jsonl line 1 (prompt_mismatch in field 'chosen')" in caplog.text


def test_unknown_reason_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown bad-row reason"):
        BadRow("looks_odd", "chosen")
