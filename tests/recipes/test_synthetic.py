"""The synthetic recipe at tiny scale, as `python -m dpo_jax.experiment --recipe=synthetic` runs it: end
to end (one beta, two pair sets, no optimisation variant, to keep it short); then again, reusing every
stage; the tabular control at the population loss reaches the optimum's gain."""

import json

import pytest

from dpo_jax.recipes import get_recipe
from dpo_jax.recipes.run import build
from tests.recipes.commands import experiment_command, run_experiment


def _command(root, *extra):
    return experiment_command(
        "synthetic", root, "--scale=tiny", "--recipe.betas=0.1", "--recipe.optimisation=", *extra
    )


def _run(root) -> dict:
    return run_experiment(_command(root), timeout=1500)[0]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_recipe")
    return root, _run(root)


def test_the_recipe_runs_end_to_end(first):
    root, result = first
    names = [s["name"] for s in result["stages"]]
    assert names == [
        "sft",
        "pairs_2",
        "pairs_8",
        "dpo_beta_0.1_pairs_2",
        "dpo_beta_0.1_pairs_8",
        "controls_beta_0.1",
        "evaluate",
    ]
    assert {s["status"] for s in result["stages"]} == {"ran"}
    evaluation = json.loads((root / "evaluate" / "evaluation.json").read_text())
    runs = {r["stage"]: r for r in evaluation["runs"]}
    assert runs["dpo_beta_0.1_pairs_8"]["num_pairs"] > runs["dpo_beta_0.1_pairs_2"]["num_pairs"]
    for run in runs.values():  # exact statistics: no policy beats the frontier at its own KL
        for split in ("eval", "train"):
            assert run[split]["reward"] <= run[split]["optimum_reward"] + 1e-9
    assert [d["stage"] for d in evaluation["departure"]] == ["dpo_beta_0.1_pairs_8"]
    table = (root / "report" / "synthetic" / "table.md").read_text()
    assert "| 0.1 | 8 |" in table and "tabular, population loss" in table
    assert result["figure"] and (root / "report" / "synthetic" / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_the_population_control_reaches_the_optimum(first):
    root, _ = first
    controls = json.loads((root / "controls_beta_0.1" / "controls.json").read_text())
    assert abs(controls["population"]["gain_ratio"] - 1.0) < 1e-3
    assert [t["pairs_per_prompt"] for t in controls["tabular"]] == [2, 8]


def test_a_second_call_reuses_every_stage(first):
    root, result = first
    table = (root / "report" / "synthetic" / "table.md").read_text()
    again = _run(root)
    assert [s["name"] for s in again["stages"]] == [s["name"] for s in result["stages"]]
    assert {s["status"] for s in again["stages"]} == {"reused"}
    assert (root / "report" / "synthetic" / "table.md").read_text() == table


def test_the_paper_plan_is_the_issues_sweep():
    config, stages = build(get_recipe("synthetic"), "paper", [])
    steps = {s.name: s.plan["steps"] for s in stages if s.name.startswith("dpo_beta_0.1")}
    assert steps == {
        "dpo_beta_0.1_pairs_4": 1000,
        "dpo_beta_0.1_pairs_16": 1024,
        "dpo_beta_0.1_pairs_64": 4096,
        "dpo_beta_0.1_pairs_256": 16384,
    }
    assert {f"optim_{v}" for v in config.optimisation.split(",")} < {s.name for s in stages}
    with pytest.raises(Exception, match="unknown"):
        build(get_recipe("synthetic"), "tiny", ["optimisation=lr_x9"])
