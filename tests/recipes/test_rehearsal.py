"""Issue 28: the win-rate recipes' paper-scale plans rehearsed end to end (`--scale=paper --rehearse`): the
paper's stages, grids, prompt selection, splits, checkpoint cadence and start-up checks, on tiny models and
paper-shaped data (recipes/rehearsal_data.py), counts capped. tldr, news and judge_agreement share one
DIR (news and judge_agreement reuse tldr's training stages, as a user's would). imdb's rehearsal is in
test_imdb.py; the tiny scale's plans are checked in test_plans.py (the same stage builders)."""

import json

import pytest

from tests.recipes.commands import rehearse
from tests.recipes.commands import statuses as _statuses

TEMPERATURES = ["0", "0.25", "0.5", "0.75", "1"]  # the paper's Figure 2 (right)


@pytest.fixture(scope="module")
def tldr_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tldr_rehearsal")
    return root, rehearse("tldr", root)


def _table_rows(table: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.split("## paper")[0].splitlines()
        if line.startswith("| ") and not line.startswith("| method")
    ]


def test_tldr_judges_every_method_on_one_prompt_set(tldr_dir):
    root, result = tldr_dir
    assert set(_statuses(result).values()) == {"ran"} and result["missing"] == []
    assert set(result["methods"]) == {"sft", "dpo_beta_0.5", "preferred_ft", "ppo", "best_of_4", "prompting"}
    table = open(result["table"]).read()
    assert "Every method was judged on one prompt set" in table and "different prompt sets" not in table
    # Each method at each of the paper's temperatures, judged on the same 4 prompts; the paper's row apart.
    rows = _table_rows(table)
    assert sorted((r[0], r[1]) for r in rows) == sorted((m, t) for m in result["methods"] for t in TEMPERATURES)
    assert all(0.0 <= float(r[2]) <= 1.0 and r[4] == "4" for r in rows) and len({r[5] for r in rows}) == 1
    assert "about 61%" in table.split("## paper")[1]
    ids = set()
    for method in result["methods"]:
        stage = f"winrate_{method}"
        policy = {"best_of_4": "sft", "prompting": "base"}.get(method, method)
        saved = json.loads((root / policy / "winrate" / f"{stage}.json").read_text())
        ids.add(tuple(saved["prompt_ids"]))
        # The posts of tldr_sft's test split (16, each with its human TL;DR), whatever the run validated on.
        assert saved["prompts_available"] == 16 and saved["without_human_reference"] == 0
    assert len(ids) == 1 and " ".join(next(iter(ids))) in table


def test_news_and_judge_agreement_reuse_the_tldr_policies(tldr_dir, tmp_path):
    root, _ = tldr_dir
    news = _statuses(rehearse("news", root))
    assert news["sft"] == news["dpo_beta_0.5"] == news["ppo"] == "reused" and news["news_winrate_ppo"] == "ran"
    agreement = rehearse("judge_agreement", root)
    statuses = _statuses(agreement)
    assert statuses["dpo_beta_0.5"] == statuses["ppo"] == "reused"
    assert statuses["table2_ppo"] == statuses["table2_sft_judge_c"] == "ran"
    table = open(agreement["table"]).read()
    # Table 2's protocol: each method at its temperature against PPO at temperature 0.
    labels = root / "ppo" / "winrate" / "table2_ppo.labels.jsonl"
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    saved = json.loads((root / "ppo" / "winrate" / "table2_ppo.json").read_text())
    assert saved["temperatures"][0]["temperature"] == 1.0 and saved["temperatures"][0]["baseline_temperature"] == 0.0
    assert "| ppo | 1 |" in table and "| sft | 0.25 |" in table and "agreement with the dataset's labels" in table
    # Human labels of the same comparisons (here: a rater who always says A) add the humans' rows.
    humans = tmp_path / "humans.jsonl"
    humans.write_text("".join(json.dumps({**r, "label": "A", "rater": "human 1"}) + "\n" for r in rows))
    with_humans = rehearse("judge_agreement", root, f"--recipe.labels={humans}")
    assert _statuses(with_humans)["table2_humans"] == "ran" and with_humans["missing"] == []
    assert "## humans" in open(with_humans["table"]).read()


def test_hh(tmp_path):
    result = rehearse("hh", tmp_path)
    assert set(result["methods"]) == {"sft", "dpo_beta_0.1", "best_of_4", "prompting"}
    saved = json.loads((tmp_path / "sft" / "winrate" / "winrate_sft.json").read_text())
    assert saved["single_turn"] and len(saved["prompt_ids"]) == 4
    prompting = json.loads((tmp_path / "base" / "winrate" / "winrate_prompting.json").read_text())
    assert prompting["shots"] == 2 and prompting["prompt_ids"] == saved["prompt_ids"]
    ours = open(result["table"]).read().split("## paper")[0]
    # DPO's win rate over training at the paper's two temperatures, at every kept checkpoint.
    for step in (2, 4):
        assert f"| {step} | 0.7 |" in ours and f"| {step} | 1 |" in ours
