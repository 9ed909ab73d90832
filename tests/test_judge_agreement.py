"""`python -m dpo_jax.judge_agreement` end to end (issue 22 item 11): a judge on the local chat server
labels the comparisons of a human label file, its labels are written and compared with the humans', and
two label files are compared without a judge."""

import json

from dpo_jax import judge_agreement
from dpo_jax.analysis.judge_agreement import read_labels
from tests.analysis.test_judge_agreement import HUMANS
from tests.judges.chat_server import KEY, MODEL, ChatServer


def results(capsys) -> list[dict]:
    out = capsys.readouterr().out
    return [json.loads(line[len("RESULT ") :]) for line in out.splitlines() if line.startswith("RESULT ")]


def test_the_command_judges_writes_labels_and_compares_two_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    labels = tmp_path / "humans.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in HUMANS))
    out = tmp_path / "judge.jsonl"
    with ChatServer() as server:  # prefers the response containing GOOD
        flags = [f"--judge_base_url={server.base_url}", f"--judge_model={MODEL}", f"--out={out}"]
        assert judge_agreement.main([f"--labels={labels}", "--task=tldr", *flags]) == 0
        assert server.requests == 5  # one per distinct comparison
    humans, judge = results(capsys)
    assert humans["agreement"] == 0.5 and humans["n"] == 2
    assert judge["between"] == f"{MODEL} and {labels}" and judge["unparsable"] == 0
    assert (judge["agree"], judge["n"]) == (4, 6) and judge["out"] == str(out)
    assert [r["label"] for r in read_labels(str(out))] == ["A", "B", "A", "A", "A"]
    assert judge_agreement.main([f"--labels={out}", f"--against={labels}"]) == 0
    _, _, versus = results(capsys)
    assert (versus["agree"], versus["n"]) == (4, 6)
    assert judge_agreement.main([f"--labels={tmp_path / 'missing.jsonl'}", f"--against={labels}"]) == 2
    assert capsys.readouterr().err.startswith("error: label file ")


def test_one_label_file_against_several_and_a_summary_file(tmp_path, capsys):
    """Issue 28 item 6: the humans' labels against judge (S) and judge (C) in one call, every agreement
    also written to --summary_out for the recipe's report."""
    labels = tmp_path / "humans.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in HUMANS))
    same = tmp_path / "same.jsonl"  # one rater agreeing with the first human on every comparison
    first = {}
    for row in HUMANS:
        key = (row["prompt"], row["response_a"], row["response_b"])
        first.setdefault(key, {**row, "rater": "judge S"})
    same.write_text("".join(json.dumps(r) + "\n" for r in first.values()))
    flipped = tmp_path / "flipped.jsonl"  # and one disagreeing on every decided label
    swap = {"A": "B", "B": "A"}
    flipped.write_text(
        "".join(json.dumps({**r, "rater": "judge C", "label": swap.get(r["label"], r["label"])}) + "\n" for r in first.values())
    )
    summary = tmp_path / "agreement.json"
    assert judge_agreement.main([f"--labels={same}", f"--against={labels},{flipped}", f"--summary_out={summary}"]) == 0
    printed = results(capsys)
    saved = json.loads(summary.read_text())["agreements"]
    assert [r["between"] for r in saved] == [r["between"] for r in printed] and len(saved) == 5
    assert saved[-1]["between"] == f"{same} and {flipped}" and saved[-1]["agreement"] == 0.0
    assert saved[2]["between"] == f"{same} and {labels}" and saved[2]["n"] > 0
