"""Issue 28: every recipe's paper-scale plan rehearsed end to end (`--scale=paper --rehearse`): the paper's
stages, grids, prompt selection, splits, checkpoint cadence and start-up checks, on tiny models and
paper-shaped data (recipes/rehearsal_data.py), counts capped. tldr, news and judge_agreement share one
DIR (news and judge_agreement reuse tldr's training stages, as a user's would)."""

import json

import pytest

from tests.recipes.commands import experiment_command, run_experiment


def rehearse(recipe, root, *extra) -> dict:
    result, stdout = run_experiment(
        experiment_command(recipe, root, "--scale=paper", "--rehearse", *extra), timeout=2400
    )
    assert stdout.index("| method") < stdout.index("RESULT ")  # the table before the RESULT line (item 8)
    assert result["rehearse"] and result["scale"] == "paper" and result["stages"][0]["name"] == "rehearsal_data"
    return result


def _statuses(result) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["stages"]}


@pytest.fixture(scope="module")
def tldr_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tldr_rehearsal")
    return root, rehearse("tldr", root)


def test_imdb(tmp_path):
    """A curve of points per run for DPO, PPO, PPO-GT and unlikelihood (every run saved every
    `eval_every` steps, each checkpoint a point), the paper's 19 runs, `missing` empty."""
    result = rehearse("imdb", tmp_path)
    assert set(_statuses(result).values()) == {"ran"} and result["missing"] == []
    frontier = json.loads((tmp_path / "frontier" / "frontier.json").read_text())
    steps: dict[str, set] = {}
    for point in frontier["points"]:
        if point.get("step") is not None:
            steps.setdefault(point["run"].rsplit("/", 1)[-1], set()).add(point["step"])
    runs = [n for n in _statuses(result) if n.split("_")[0] in ("dpo", "ppo", "unlikelihood", "preferred")]
    assert len(runs) == 19 and set(steps) == set(runs)
    assert all(s == {2, 4} for s in steps.values()), steps  # every 2 steps (the paper's 100, capped)
    assert len(frontier["prompt_ids"]) == 4 and frontier["prefix_unit"] == "tokens"
    table = open(result["table"]).read()
    for method in ("dpo", "ppo", "ppo-gt", "unlikelihood", "preferred-ft", "best-of-n", "sft (reference)"):
        assert f"| {method} |" in table
    assert "rehearsal caps: " in table and "eval_every: 100 at paper scale -> 2" in table
    assert "ppo_steps = 4: (check)" in table


def test_tldr_judges_every_method_on_one_prompt_set(tldr_dir):
    root, result = tldr_dir
    assert set(_statuses(result).values()) == {"ran"} and result["missing"] == []
    assert set(result["methods"]) == {"sft", "dpo_beta_0.5", "preferred_ft", "ppo", "best_of_4", "prompting"}
    table = open(result["table"]).read()
    assert "Every method was judged on one prompt set" in table and "different prompt sets" not in table
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
