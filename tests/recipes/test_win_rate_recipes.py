"""The win-rate recipes at tiny scale (one temperature, two prompts): tldr; news and judge_agreement in
the same DIR, where they reuse tldr's training stages (same commands, same fingerprints); hh."""

import json
import subprocess
import sys

import pytest

from tests.train_helpers import REPO, process_env

SMALL = ["--recipe.temperatures=0", "--recipe.num_prompts=2", "--recipe.best_of_n=2"]


def _run(recipe, root, *extra) -> dict:
    command = [
        sys.executable,
        "-m",
        "dpo_jax.experiment",
        f"--recipe={recipe}",
        f"--workdir={root}",
        *SMALL,
        *extra,
    ]
    done = subprocess.run(command, cwd=REPO, env=process_env(), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout[-3000:]
    return json.loads(lines[0][len("RESULT ") :])


@pytest.fixture(scope="module")
def tldr(tmp_path_factory):
    root = tmp_path_factory.mktemp("tldr_recipe")
    return root, _run("tldr", root)


def _table_rows(result) -> list[list[str]]:
    text = open(result["table"]).read().split("## paper")[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ")
    ]


def test_tldr(tldr):
    root, result = tldr
    assert {s["status"] for s in result["stages"]} == {"ran"}
    assert set(result["methods"]) == {"sft", "dpo_beta_0.5", "ppo", "best_of_2"}
    rows = _table_rows(result)[1:]
    assert sorted(r[0] for r in rows) == sorted(result["methods"]) and all(r[1] == "0" for r in rows)
    assert all(0.0 <= float(r[2]) <= 1.0 and r[4] == "2" for r in rows)
    assert "about 61%" in open(result["table"]).read()  # the paper's row, apart from ours


def test_news_and_judge_agreement_reuse_the_tldr_policies(tldr):
    root, _ = tldr
    news = _run("news", root)
    statuses = {s["name"]: s["status"] for s in news["stages"]}
    assert statuses["sft"] == statuses["dpo_beta_0.5"] == statuses["ppo"] == "reused"
    assert statuses["news_winrate_dpo_beta_0.5"] == "ran" and news["table"].endswith("report/news/table.md")
    agreement = _run("judge_agreement", root)
    assert [s["status"] for s in agreement["stages"]] == ["reused", "reused", "ran"]
    table = open(agreement["table"]).read()
    assert "agreement with the data's human labels" in table and "GPT-4 (S)-human agreement" in table


def test_hh(tmp_path):
    result = _run("hh", tmp_path)
    assert set(result["methods"]) == {"sft", "dpo_beta_0.1", "best_of_2"}
    assert (tmp_path / "winrate_over_training" / "stage.log").exists()
    # The paper's second HH figure in the report: one row per kept checkpoint (steps 2 and 4 of 4).
    report = tmp_path / "report" / "hh"
    ours = (report / "table.md").read_text().split("## paper")[0]
    assert "win rate over training" in ours and "| 2 | 0 |" in ours and "| 4 | 0 |" in ours
    assert (report / "figure_over_training.png").stat().st_size > 0
