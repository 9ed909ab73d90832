"""Every recipe's plan at both scales (no compile here: --recipe.aot_target= skips it), and the
command's handling of bad input: one `error:` line and exit status 2."""

import json

import pytest

from dpo_jax import UserError
from dpo_jax.recipes import get_recipe, recipes
from dpo_jax.recipes.run import plan


def _plan(name, scale, *overrides):
    lines = []
    result = plan(get_recipe(name), scale, "/tmp/unused", ["aot_target=", *overrides], log=lines.append)
    return result, "\n".join(lines)


@pytest.mark.parametrize("name", sorted(recipes()))
@pytest.mark.parametrize("scale", ["tiny", "paper"])
def test_every_recipe_prints_its_plan(name, scale):
    result, text = _plan(name, scale)
    assert result["dry_run"] and result["stages"][0]["name"] == "sft"
    assert text.splitlines()[-1].startswith("RESULT ") and json.loads(text.splitlines()[-1][7:]) == result
    assert "python -m dpo_jax.main" in text and "{root}" not in text
    if scale == "paper":
        assert "fixture:" not in text  # the paper's data sets, not the shipped fixtures
        assert ("--judge=openai" in text) == (name != "imdb")  # imdb is scored by its classifier


def test_the_grids_are_fields_with_the_paper_values():
    tldr = get_recipe("tldr").config("paper")
    assert tldr.temperatures == (0.0, 0.25, 0.5, 0.75, 1.0) and tldr.best_of_n == 128 and tldr.betas == (0.5,)
    assert get_recipe("hh").config("paper").betas == (0.1,)
    assert get_recipe("news").config("paper").temperatures == (0.0, 0.25)
    result, text = _plan("tldr", "paper", "betas=0.1,0.5", "judge_model=gpt-4o")
    names = [s["name"] for s in result["stages"]]
    assert {"dpo_beta_0.1", "dpo_beta_0.5", "winrate_best_of_128"} <= set(names)
    best = next(s for s in result["stages"] if s["name"] == "winrate_best_of_128")
    # 5 temperatures x 256 prompts, each drawing 128 samples; the cost is an estimate at gpt-4o's price.
    assert best["judge_calls"] == "1280" and best["samples"] == str(1280 * 128)
    assert best["judge_cost"].startswith("about $") and "estimate" in best["judge_cost"]


def test_imdb_plan_follows_the_grid():
    result, _ = _plan("imdb", "tiny", "betas=0.1,1", "ppo_kl_coefs=0.05,0.2")
    names = [s["name"] for s in result["stages"]]
    assert names == [
        "sft",
        "classifier",
        "pairs",
        "dpo_beta_0.1",
        "dpo_beta_1",
        "preferred_ft",
        "unlikelihood_alpha_1",
        "reward_model",
        "ppo_kl_0.05",
        "ppo_kl_0.2",
        "ppo_gt_kl_0.05",
        "frontier",
    ]
    assert result["missing"] == []
    frontier = result["stages"][-1]
    # Best-of-4 of the SFT policy: 8 prefixes x 4 picks, each of 4 samples, beside 7 policies and the SFT.
    assert frontier["samples"] == "8 policies x 8 prefixes x 4, Best-of-N (N=4): 8 prefixes x 4 x 4"
    paper, text = _plan("imdb", "paper")
    assert (
        "classifier" not in [s["name"] for s in paper["stages"]] and "siebert/sentiment-roberta-large" in text
    )
    gt = (
        "--config.ppo.reward_model=siebert/sentiment-roberta-large-english --config.ppo.reward_label=POSITIVE"
    )
    assert [s["name"] for s in paper["stages"] if s["name"].startswith("ppo_gt")] == [
        "ppo_gt_kl_0.05",
        "ppo_gt_kl_0.2",
    ] and gt in text
    assert "--best_of=4,16,64,128 --best_of_reward=/tmp/unused/reward_model" in text
    assert "Best-of-N (N=4,16,64,128): 256 prefixes x 4 x 128" in paper["stages"][-1]["samples"]
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
