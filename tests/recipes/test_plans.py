"""Every recipe's plan at both scales and rehearsed (no compile here: --recipe.aot_target= skips it), the
paper's grids as the paper-scale defaults, every paper-scale stage config through its stage's own
start-up checks, and the command's handling of bad input: one `error:` line and exit status 2."""

import json
import re
import subprocess
import sys

import pytest

from dpo_jax import UserError
from dpo_jax.recipes import get_recipe, recipes
from dpo_jax.recipes.run import build, check_stages, plan, stage_config
from tests.train_helpers import REPO, process_env

PAPER_RECIPES = sorted(name for name, recipe in recipes().items() if recipe.rehearsal is not None)


def _plan(name, scale, *overrides, rehearse=False):
    lines = []
    result = plan(
        get_recipe(name), scale, "/tmp/unused", ["aot_target=", *overrides], log=lines.append, rehearse=rehearse
    )
    return result, "\n".join(lines)


@pytest.mark.parametrize("name", PAPER_RECIPES)
@pytest.mark.parametrize("scale", ["tiny", "paper", "rehearse"])
def test_every_recipe_prints_its_plan(name, scale):
    rehearse = scale == "rehearse"
    result, text = _plan(name, "paper" if rehearse else scale, rehearse=rehearse)
    first = "rehearsal_data" if rehearse else "sft"
    assert result["dry_run"] and result["stages"][0]["name"] == first and result["checked"] >= 3
    assert text.splitlines()[-1].startswith("RESULT ") and json.loads(text.splitlines()[-1][7:]) == result
    assert "python -m dpo_jax.main" in text and "{root}" not in text
    if scale == "paper":
        assert "fixture:" not in text and "rehearsal" not in text  # the paper's data sets
        assert ("--judge=openai" in text) == (name != "imdb")  # imdb is scored by its classifier
    if rehearse:  # the same stages as at paper scale, the data stage first, tiny models, capped counts
        paper, _ = _plan(name, "paper")  # the paper's stages, beside the stand-ins of hub models
        stand_ins = {"rehearsal_data", "base", "classifier"}
        capped = lambda stages: [re.sub(r"best_of_\d+", "best_of_N", s["name"]) for s in stages]  # N capped
        assert [n for n in capped(result["stages"]) if n not in stand_ins] == capped(paper["stages"])
        assert "fixture:" not in text and "/tmp/unused/rehearsal_data/" in text and ",tiny" in text
        assert "rehearsal: " in text and "--judge=openai" not in text


def test_the_grids_are_the_papers_at_paper_scale():
    """Issue 28 item 4: REFERENCE 2b's grids, each value's source printed with the plan."""
    imdb = get_recipe("imdb").config("paper")
    assert imdb.betas == (0.05, 0.1, 1.0, 5.0) and imdb.unlikelihood_alphas == (0.05, 0.1, 0.5, 1.0)
    assert imdb.ppo_kl_targets == imdb.ppo_gt_kl_targets == (3.0, 6.0, 9.0, 12.0)
    assert len(imdb.preferred_ft_seeds) >= 2 and imdb.eval_every == 100 and imdb.ppo_steps >= 1
    tldr = get_recipe("tldr").config("paper")
    assert tldr.temperatures == (0.0, 0.25, 0.5, 0.75, 1.0) and tldr.best_of_n == 128 and tldr.betas == (0.5,)
    hh = get_recipe("hh").config("paper")
    assert hh.betas == (0.1,) and hh.shots == 2 and hh.over_training_temperatures == (0.7, 1.0)
    assert get_recipe("news").config("paper").temperatures == (0.0, 0.25)
    result, text = _plan("imdb", "paper")
    names = [s["name"] for s in result["stages"]]
    runs = [n for n in names if n.split("_")[0] in ("dpo", "ppo", "unlikelihood", "preferred")]
    assert len(runs) == 19  # 4 DPO + 3 preferred-FT + 4 unlikelihood + 4 PPO + 4 PPO-GT
    assert "--config.ppo.kl_target=12.0" in text and "--checkpoints=every:100" in text
    assert "ppo_steps = 1000: (check)" in text and "preferred_ft_seeds = (0, 1, 2): (check)" in text
    result, text = _plan("tldr", "paper", "betas=0.1,0.5", "judge_model=gpt-4o")
    names = [s["name"] for s in result["stages"]]
    assert {"dpo_beta_0.1", "dpo_beta_0.5", "winrate_best_of_128", "winrate_preferred_ft", "winrate_prompting"} <= set(names)
    assert "--workdir=EleutherAI/gpt-j-6b" in text and "tldr_zero_shot.txt" in text
    best = next(s for s in result["stages"] if s["name"] == "winrate_best_of_128")
    # 5 temperatures x 256 prompts, each drawing 128 samples; the cost is an estimate at gpt-4o's price.
    assert best["judge_calls"] == "1280" and best["samples"] == str(1280 * 128)
    assert best["judge_cost"].startswith("about $") and "estimate" in best["judge_cost"]
    _, text = _plan("hh", "paper")
    assert "--shots=2" in text and "--workdir=EleutherAI/pythia-2.8b" in text and "--temperatures=0.7,1.0" in text


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_every_paper_stage_config_passes_its_stages_start_up_checks(name):
    """Issue 28, done when: each paper-scale training stage's config (as the stage would build it)
    passes the checks the stage itself runs first (PPO's rollout steps among them)."""
    config, stages = build(get_recipe(name), "paper", ["aot_target="])
    assert check_stages(stages) == len([s for s in stages if s.aot]) >= 3
    for stage in (s for s in stages if s.aot):
        stage_cfg = stage_config(stage, "base")
        if stage_cfg.stage == "ppo":
            assert stage_cfg.num_train_steps >= 1 and stage_cfg.ppo.kl_target > 0


def test_a_stage_that_would_refuse_to_start_stops_the_dry_run_naming_it(tmp_path):
    """Issue 28, done when: exit 2 and one error line naming the stage, before any compile."""
    command = [
        sys.executable, "-m", "dpo_jax.experiment", "--recipe=imdb", "--scale=paper", "--dry_run",
        "--recipe.args.dpo=--config.beta=-1", f"--workdir={tmp_path}",
    ]
    done = subprocess.run(command, cwd=REPO, env=process_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: stage dpo_beta_0.05: beta=-1.0 must be a number > 0"], done.stderr[-2000:]
    assert "aot " not in done.stdout  # stopped before compiling
    _, stages = build(get_recipe("imdb"), "paper", ["ppo_steps=0"])  # main before issue 28: PPO's 0 steps
    with pytest.raises(UserError, match="stage ppo_kl_target_3: config.num_train_steps=0"):
        check_stages(stages)


def test_the_imdb_plan_follows_the_grid():
    result, _ = _plan("imdb", "tiny", "betas=0.1,1", "ppo_kl_targets=6,9", "ppo_gt_kl_targets=6",
                      "unlikelihood_alphas=1", "preferred_ft_seeds=0")
    names = [s["name"] for s in result["stages"]]
    assert names == [
        "sft", "classifier", "pairs", "dpo_beta_0.1", "dpo_beta_1", "preferred_ft_seed_0",
        "unlikelihood_alpha_1", "reward_model", "ppo_kl_target_6", "ppo_kl_target_9", "ppo_gt_kl_target_6",
        "frontier",
    ]
    assert result["missing"] == []
    frontier = result["stages"][-1]
    assert frontier["samples"] == (
        "7 runs, each at every 2 steps, + the reference: 8 test prefixes x 4 per point; "
        "Best-of-N (N=4): 8 test prefixes x 4 x 4"
    )
    paper, text = _plan("imdb", "paper")
    assert "classifier" not in [s["name"] for s in paper["stages"]] and "siebert/sentiment-roberta-large" in text
    gt = "--config.ppo.reward_model=siebert/sentiment-roberta-large-english --config.ppo.reward_label=POSITIVE"
    assert gt in text and "--best_of=4,16,64,128 --best_of_reward=/tmp/unused/reward_model" in text
    _, text = _plan("imdb", "tiny", "best_of_n=")  # no Best-of-N: the frontier takes no selector
    assert "--best_of" not in text


def test_bad_input_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="no such recipe"):
        get_recipe("imbd")
    with pytest.raises(UserError, match="--recipe.bettas: no such field"):
        _plan("imdb", "tiny", "bettas=0.1")
    _, text = _plan("imdb", "tiny", "unlikelihood_alphas=0.5,1")
    assert "--config.unlikelihood_alpha=0.5" in text and "--config.unlikelihood_alpha=1" in text
    with pytest.raises(UserError, match="each N must be a whole number >= 2"):
        _plan("imdb", "tiny", "best_of_n=1,4")
    with pytest.raises(UserError, match="--recipe.configs_dir"):
        _plan("hh", "tiny", f"configs_dir={tmp_path}")
    with pytest.raises(UserError, match="--recipe.seed=True: expected a int"):  # issue 33 item 5
        _plan("imdb", "tiny", "seed=True")
    with pytest.raises(UserError, match="stage sft: config.num_train_steps and config.num_epochs must be >= 0"):
        _plan("imdb", "tiny", "train_steps=-3")  # refused before the first stage, by the stage's own check
    with pytest.raises(UserError, match="contradict --scale=tiny"):
        _plan("imdb", "tiny", "scale=paper")
    with pytest.raises(UserError, match="--rehearse rehearses the paper-scale plan"):
        _plan("imdb", "tiny", rehearse=True)
    with pytest.raises(UserError, match="recipe synthetic runs at paper scale on this machine"):
        _plan("synthetic", "paper", rehearse=True)
    with pytest.raises(UserError, match="stage dpo_beta_-1: beta=-1.0"):  # before any stage runs
        _plan("hh", "tiny", "betas=-1")
