"""The synthetic experiment's RLHF baselines end to end (`configs/synthetic.py:tiny,rlhf` on the 8 fake CPU
devices): the reward model trains on the DPO pairs through the trainer, PPO runs with the true and the
learned reward, best-of-N is exact, and all of them land in the JSON, the table and the figure."""

import contextlib
import io
import json

import numpy as np
import pytest

from configs.synthetic import get_config
from dpo_jax.recipes.synthetic_demo import run_demo
from dpo_jax.synthetic.rlhf import ppo_runs
from tests.train_helpers import REPO

PPO_STAGES = ("ppo_true_reward_kl_0.1", "ppo_learned_reward_kl_0.1")
CONFIG = f"{REPO}/configs/synthetic.py:tiny,rlhf"


def same(a, b) -> bool:
    """Equal as JSON (NaN, the gain ratio of pi_ref itself, is not equal to itself as a float)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.fixture(scope="module")
def rlhf_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rlhf")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = run_demo(get_config("tiny,rlhf"), str(workdir), CONFIG)
    return workdir, result, stdout.getvalue()


def test_every_rlhf_baseline_is_evaluated_exactly(rlhf_run):
    workdir, result, printed = rlhf_run
    saved = json.loads((workdir / "synthetic_eval.json").read_text())
    assert same(saved, result)
    assert 0.0 <= saved["reward_model"]["eval_pair_accuracy"] <= 1.0
    assert [p["n"] for p in saved["best_of_n"]] == [1, 2, 8]
    # N = 1 is pi_ref itself.
    assert saved["best_of_n"][0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert saved["best_of_n"][0]["reward"] == pytest.approx(saved["reference"]["reward"], abs=1e-6)
    assert np.isnan(saved["best_of_n"][0]["gain_ratio"])  # no gain ratio for pi_ref itself
    for name in ("ppo_true_reward", "ppo_learned_reward", "best_of_n"):
        for point in saved[name]:
            assert point["reward"] <= point["optimum_reward"] + 1e-6 and point["kl"] >= -1e-9
    assert [p["kl_coef"] for p in saved["ppo_true_reward"]] == [0.1]
    for stage in ("reward_model", *PPO_STAGES):
        assert (workdir / stage / "FINISHED").exists() and (
            workdir / stage / "export" / "config.json"
        ).exists()
    for label in ("PPO (true reward)", "PPO (learned RM)", "best-of-N (learned RM)", "reward model"):
        assert label in printed
    assert (workdir / "synthetic_frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_reuses_the_rlhf_stages(rlhf_run):
    workdir, result, _ = rlhf_run
    with contextlib.redirect_stdout(io.StringIO()):
        again = run_demo(get_config("tiny,rlhf"), str(workdir), CONFIG)
    assert again["seconds"]["reward_model"] == 0.0
    assert all(again["seconds"][stage] == 0.0 for stage in PPO_STAGES)
    assert same(again["ppo_true_reward"], result["ppo_true_reward"]) and same(
        again["best_of_n"], result["best_of_n"]
    )


def test_ppo_settings_are_checked():
    config = get_config("tiny")
    config.synthetic.ppo_kl_coefs = "0.1,0.1"
    with pytest.raises(ValueError, match="ppo_kl_coefs"):
        ppo_runs(config.synthetic)
    config.synthetic.ppo_kl_coefs, config.synthetic.ppo_rewards = "0.1", "oracle"
    with pytest.raises(ValueError, match="unknown"):
        ppo_runs(config.synthetic)
    assert np.all([kind in ("true", "learned") for kind, _ in ppo_runs(get_config("rlhf").synthetic)])
