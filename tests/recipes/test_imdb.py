"""The imdb recipe at tiny scale, one run per method (two betas, so the second reuses the first's
reference log-probs; PPO-GT on the tiny classifier, Best-of-4 on the frontier), as
`python -m dpo_jax.experiment` runs it: end to end; again (every stage
reused); and killed mid-stage (SIGKILL while a training stage runs) then restarted: the killed stage
resumes from its checkpoint and the table comes out the same."""

import shutil
import signal
import subprocess
import time

import pytest

from dpo_jax.recipes.engine import STAGE_FILE
from tests.recipes.commands import experiment_command, run_experiment
from tests.train_helpers import REPO, process_env

FIGURE_METHODS = {"dpo", "ppo", "ppo-gt", "unlikelihood", "preferred-ft", "best-of-n", "sft (reference)"}


def _command(root):
    return experiment_command(
        "imdb",
        root,
        "--scale=tiny",
        "--recipe.betas=0.1,1",
        "--recipe.ppo_kl_targets=6",
        "--recipe.ppo_gt_kl_targets=6",
        "--recipe.unlikelihood_alphas=1",
        "--recipe.preferred_ft_seeds=0",
    )


def _run(root) -> dict:
    return run_experiment(_command(root), timeout=1500)[0]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("imdb_recipe")
    result = _run(root)
    return root, result, (root / "report" / "imdb" / "table.md").read_text()


def test_the_recipe_runs_end_to_end(first):
    root, result, table = first
    assert result["recipe"] == "imdb" and {s["status"] for s in result["stages"]} == {"ran"}
    names = [s["name"] for s in result["stages"]]
    assert names[:3] == ["sft", "classifier", "pairs"] and names[-1] == "frontier"
    assert set(result["methods"]) == FIGURE_METHODS
    assert result["reference_logps"] == {"computed": 1, "reused": 1}  # beta 1 reused beta 0.1's
    assert (root / "report" / "imdb" / "figure.png").stat().st_size > 0 and result["figure"].endswith(
        "figure.png"
    )
    ours, paper = table.split("## paper")
    assert "| dpo | 0.1 | 2 |" in ours and "| dpo | 1 | 4 |" in ours and "| ppo | 6 | 4 |" in ours
    assert "| ppo-gt | 6 | 2 |" in ours and "| ppo_gt_kl_target_6 |" in ours
    best_of_4 = next(line for line in ours.splitlines() if line.startswith("| best-of-n | 4 |"))
    assert "| 0.6363 (analytic bound) |" in best_of_4 and best_of_4.endswith("| sft + reward_model |")
    assert result["missing"] == [] and "Not on this figure yet" not in table
    assert "dominates" in paper and "dominates" not in ours  # the paper's claim in its own rows


def test_the_same_command_reuses_every_stage(first):
    root, _, table = first
    start = time.time()
    again = _run(root)
    assert {s["status"] for s in again["stages"]} == {"reused"} and all(
        s["seconds"] == 0 for s in again["stages"]
    )
    assert (root / "report" / "imdb" / "table.md").read_text() == table
    print(f"second run: {time.time() - start:.1f} s")


def test_a_killed_recipe_resumes_and_gives_the_same_table(first):
    root, _, table = first
    # Undo the last stages (their directories go), then kill the recipe inside the reward model's run,
    # once its step-2 checkpoint is written: the restart resumes it, then reruns PPO and the frontier
    # (Best-of-N's selector is the reward model); PPO-GT, on the classifier, is reused.
    for stage in ("reward_model", "ppo_kl_target_6", "frontier", "report"):
        shutil.rmtree(root / stage)
    process = subprocess.Popen(
        _command(root), cwd=REPO, env=process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = root / "reward_model" / "checkpoints" / "2"
    deadline = time.time() + 900
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (root / "reward_model" / STAGE_FILE).exists()

    result = _run(root)
    statuses = {s["name"]: s["status"] for s in result["stages"]}
    assert statuses["reward_model"] == statuses["ppo_kl_target_6"] == statuses["frontier"] == "ran"
    assert statuses["sft"] == statuses["dpo_beta_0.1"] == statuses["ppo_gt_kl_target_6"] == "reused"
    assert "resumed from step 2" in (root / "reward_model" / "stage.log").read_text()
    assert (root / "report" / "imdb" / "table.md").read_text() == table
