"""The imdb recipe (the paper's Figure 2, left) as `python -m dpo_jax.experiment --recipe=imdb --scale=paper`
runs it, rehearsed on tiny models and paper-shaped data (`--rehearse`, counts capped): the paper's 19 runs
(DPO, PPO, PPO-GT, unlikelihood, preferred-FT over their grids, each run a curve of checkpoints), Best-of-N
and the SFT reference on one frontier, the reference log-probs computed once for the four betas; the same
command again (every stage reused); and the recipe killed (SIGKILL) inside a training stage, then
restarted: that stage resumes from its checkpoint, only what reads it runs again, and the table comes out
the same. (The tiny scale's plan is checked in test_plans.py: the same stage builders.)"""

import json
import shutil
import signal
import subprocess
import time

import pytest

from dpo_jax.recipes.engine import STAGE_FILE
from tests.recipes.commands import rehearsal_command, rehearse, statuses
from tests.train_helpers import REPO, process_env

FIGURE_METHODS = {"dpo", "ppo", "ppo-gt", "unlikelihood", "preferred-ft", "best-of-n", "sft (reference)"}
BETAS = ("0.05", "0.1", "1", "5")  # the paper's grid (App. C)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("imdb_rehearsal")
    # Every stage's log lists the modules it imported (Python's -X importtime, on stderr).
    result = rehearse("imdb", root, PYTHONPROFILEIMPORTTIME="1")
    return root, result, (root / "report" / "imdb" / "table.md").read_text()


def test_the_papers_plan_runs_end_to_end(first):
    """A curve of points per run for DPO, PPO, PPO-GT and unlikelihood (every run saved every
    `eval_every` steps, each checkpoint a point), the paper's 19 runs, `missing` empty."""
    root, result, table = first
    assert set(statuses(result).values()) == {"ran"} and result["missing"] == []
    names = [s["name"] for s in result["stages"]]
    assert names[1:4] == ["sft", "classifier", "pairs"] and names[-1] == "frontier"
    assert set(result["methods"]) == FIGURE_METHODS
    assert result["reference_logps"] == {"computed": 1, "reused": 3}  # one pass for the four betas
    frontier = json.loads((root / "frontier" / "frontier.json").read_text())
    steps: dict[str, set] = {}
    for point in frontier["points"]:
        if point.get("step") is not None:
            steps.setdefault(point["run"].rsplit("/", 1)[-1], set()).add(point["step"])
    runs = [n for n in names if n.split("_")[0] in ("dpo", "ppo", "unlikelihood", "preferred")]
    assert len(runs) == 19 and set(steps) == set(runs)
    assert all(s == {2, 4} for s in steps.values()), steps  # every 2 steps (the paper's 100, capped)
    assert len(frontier["prompt_ids"]) == 4 and frontier["prefix_unit"] == "tokens"
    assert (root / "report" / "imdb" / "figure.png").stat().st_size > 0 and result["figure"].endswith("figure.png")
    ours, paper = table.split("## paper")
    for method in FIGURE_METHODS:
        assert f"| {method} |" in ours
    for beta in BETAS:
        assert f"| dpo | {beta} | 2 |" in ours and f"| dpo | {beta} | 4 |" in ours
    assert "| ppo-gt | 6 | 2 |" in ours and "| ppo_gt_kl_target_6 |" in ours and "| ppo | 12 | 4 |" in ours
    best_of_4 = next(line for line in ours.splitlines() if line.startswith("| best-of-n | 4 |"))
    assert "| 0.6363 (analytic bound) |" in best_of_4 and best_of_4.endswith("| sft + reward_model |")
    assert "rehearsal caps: " in table and "eval_every: 100 at paper scale -> 2" in table
    assert "ppo_steps = 4: (check)" in table and "Not on this figure yet" not in table
    assert "dominates" in paper and "dominates" not in ours  # the paper's claim in its own rows


def imported(log: str) -> set[str]:
    """The modules a stage log's -X importtime lines name ("import time: self | cumulative | name")."""
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:")}


def test_jax_only_stages_import_no_torch(first):
    """transformers' config classes, `AutoTokenizer` and tensorboardX import torch when it is installed
    (as here: ~1.5-2.5 s a process): the stages that train and export in JAX (SFT, DPO, preferred-FT,
    unlikelihood, the reward model, PPO on it) load our tokenizer, exports and configs without them and
    write TensorBoard files with our own writer. The tiny sentiment classifier is a transformers GPT-2
    head that runs in PyTorch: its stage imports torch, so the check sees imports."""
    root, result, _ = first
    jax_only = [
        s["name"] for s in result["stages"]
        if s["name"] == "sft" or s["name"].split("_")[0] in ("dpo", "preferred", "unlikelihood", "reward")
        or s["name"].startswith("ppo_kl")
    ]  # fmt: skip
    assert len(jax_only) == 1 + 4 + 3 + 4 + 1 + 4, jax_only
    for name in jax_only:
        modules = imported((root / name / "stage.log").read_text())
        assert "jax" in modules and "torch" not in modules, name
        assert list((root / name / "tensorboard").iterdir()), name
    assert "torch" in imported((root / "classifier" / "stage.log").read_text())


def test_the_same_command_reuses_every_stage(first):
    root, _, table = first
    start = time.time()
    again = rehearse("imdb", root)
    assert set(statuses(again).values()) == {"reused"} and all(s["seconds"] == 0 for s in again["stages"])
    assert (root / "report" / "imdb" / "table.md").read_text() == table
    print(f"second run: {time.time() - start:.1f} s")


def test_a_killed_recipe_resumes_and_gives_the_same_table(first):
    root, _, table = first
    # Undo one DPO run and what reads it (the frontier, the report), then kill the recipe inside that
    # run once its step-2 checkpoint is written: the restart resumes it and reruns the frontier; the
    # other 18 runs, the SFT, the classifier and the reward model are reused.
    killed = "dpo_beta_5"
    for stage in (killed, "frontier", "report"):
        shutil.rmtree(root / stage)
    process = subprocess.Popen(
        rehearsal_command("imdb", root),
        cwd=REPO,
        env=process_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = root / killed / "checkpoints" / "2"
    deadline = time.time() + 900
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (root / killed / STAGE_FILE).exists()

    result = rehearse("imdb", root)
    ran = {name for name, status in statuses(result).items() if status == "ran"}
    assert ran == {killed, "frontier"}, statuses(result)
    assert "resumed from step 2" in (root / killed / "stage.log").read_text()
    assert (root / "report" / "imdb" / "table.md").read_text() == table
