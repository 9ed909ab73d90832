"""A run's method and sweep parameter come from its stage and objective (issue 22 item 3): PPO runs, which
carry the default loss "dpo", never join the DPO curve, and preferred-FT is told from SFT by its data."""

import json

import pytest

from dpo_jax import UserError
from dpo_jax.analysis.methods import Method, run_method
from dpo_jax.analysis.runs import RunInfo
from dpo_jax.config.defaults import base_config
from tests.data.data_helpers import write_jsonl


def config(**fields):
    c = base_config()
    for key, value in fields.items():
        target = c
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return c


@pytest.fixture
def reward_model_run(tmp_path):
    run = tmp_path / "rm"
    (run / "export").mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"stage": "reward_model"}))
    return run


def test_preference_losses_sweep_beta():
    assert run_method(config(beta=0.3)) == Method("dpo", "beta", 0.3)
    assert run_method(config(loss="ipo", beta=0.5)) == Method("ipo", "beta", 0.5)
    assert run_method(config(loss="unlikelihood")) == Method("unlikelihood", "alpha", 1.0)


def test_ppo_is_never_on_the_dpo_curve(reward_model_run):
    learned = config(stage="ppo", **{"ppo.reward_model": str(reward_model_run / "export"), "ppo.kl_coef": 0.2})
    assert run_method(learned) == Method("ppo", "kl_coef", 0.2)
    assert run_method(config(stage="ppo", **{"ppo.reward_model": str(reward_model_run)})).name == "ppo"
    # The ground truth: a given reward function, or a classifier that is no dpo_jax reward model.
    assert run_method(config(stage="ppo")) == Method("ppo-gt", "kl_coef", 0.05)
    gt = config(stage="ppo", **{"ppo.reward_model": "siebert/sentiment-roberta-large-english"})
    assert run_method(gt).name == "ppo-gt"
    adaptive = config(stage="ppo")
    adaptive.ppo.kl_target = 6.0
    assert run_method(adaptive) == Method("ppo-gt", "kl_target", 6.0)


def test_sft_on_preference_data_is_preferred_ft(tmp_path):
    assert run_method(config(stage="sft", loss="sft", **{"data.source": "hh"})) == Method("preferred-ft")
    assert run_method(config(stage="sft", loss="sft", **{"data.source": "tldr_sft"})) == Method("sft")
    assert run_method(config(stage="sft", loss="sft", **{"data.source": "imdb"})) == Method("sft")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": " b", "rejected": " c"}])
    demos = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": "a", "completion": " b"}])
    local = dict(stage="sft", loss="sft", **{"data.source": "local"})
    assert run_method(config(**local, **{"data.path": pairs})).name == "preferred-ft"
    assert run_method(config(**local, **{"data.path": demos})).name == "sft"
    with pytest.raises(UserError, match="cannot tell SFT from preferred-FT"):
        run_method(config(**local, **{"data.path": str(tmp_path / "gone.jsonl")}))


def test_best_of_n_sweeps_n_whatever_the_policy():
    assert run_method(config(stage="sft"), best_of=16) == Method("best-of-n", "N", 16.0)
    plain = RunInfo(path="gpt2", model_path="gpt2", config=None)
    assert plain.method() == Method("model") and plain.method(best_of=4) == Method("best-of-n", "N", 4.0)


def test_a_run_reports_its_method_and_parameter():
    run = RunInfo(path="/runs/ppo", model_path="/runs/ppo/export", config=config(stage="ppo"))
    assert run.method().as_dict() == {"method": "ppo-gt", "parameter": "kl_coef", "value": 0.05}
