"""The sampling resume file: finished prompts kept across a kill, a torn last line costing no record."""

import json

from dpo_jax.sampling.resume import FinishedPrompts


def _entry(index: int) -> dict:
    return {"prompt": index, "prompt_hash": f"h{index}", "tokens": [[1, 2]], "mask": [[1, 1]], "logps": [0.5]}


def test_a_torn_last_line_is_ignored_and_the_next_append_starts_a_line_of_its_own(tmp_path, caplog):
    path = tmp_path / "resume.jsonl"
    FinishedPrompts(str(path), "job").append([_entry(0)])
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"job": "job", **_entry(1)})[:25])  # the kill cut this write short

    resumed = FinishedPrompts(str(path), "job")
    assert sorted(resumed.records) == [0] and "1 unreadable line(s) ignored" in caplog.text
    resumed.append([_entry(1), _entry(2)])
    again = FinishedPrompts(str(path), "job")
    assert sorted(again.records) == [0, 1, 2] and again.done(2, "h2") is not None
    assert again.done(2, "other prompt") is None


def test_other_jobs_lines_are_not_reused(tmp_path):
    path = tmp_path / "resume.jsonl"
    FinishedPrompts(str(path), "job-a").append([_entry(0)])
    assert FinishedPrompts(str(path), "job-b").records == {}
