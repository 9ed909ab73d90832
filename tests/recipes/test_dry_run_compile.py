"""`--dry_run --scale=paper` compiles every training stage's programs (SFT, reward model, DPO, PPO's
four) and the evaluation's decode and scoring programs for the recipe's target; here the same
function over the tldr recipe's tiny stages on a v5e-8 (a compile each, seconds)."""

import jax

from dpo_jax.recipes import get_recipe
from dpo_jax.recipes.run import build, compile_stages
from tests.perf.test_aot import needs_tpu


@needs_tpu
def test_every_stage_and_the_evaluation_compile_for_the_target():
    config, stages = build(get_recipe("tldr"), "tiny", ["aot_target=v5e-8"])
    lines = []
    # tests/conftest.py sets "highest" matmul precision for the CPU's fp32 numerics; the scorer computes
    # in bf16 on a TPU (judges.scoring.scorer_dtype), whose splash kernel takes no fp32 contraction of bf16
    # operands, so the compile runs at the default precision, as `python -m dpo_jax.experiment` does.
    with jax.default_matmul_precision("default"):
        compiled = compile_stages(config, stages, log=lines.append)
    by_stage = {c["stage"]: c for c in compiled}
    assert list(by_stage) == [
        "sft", "reward_model", "dpo_beta_0.5", "ppo", "evaluation (sample)", "evaluation (score)",
    ]  # fmt: skip
    assert "aot preferred_ft: same programs as sft" in lines  # SFT on other data: compiled once
    assert all(c["compiled"] and c["fits"] and c["target"] == "v5e-8" for c in compiled), compiled
    assert by_stage["ppo"]["programs"] == ["rollout", "score", "rollout_targets", "ppo_update"]
    assert by_stage["reward_model"]["programs"] == ["train_step", "eval_step"]
    assert by_stage["evaluation (sample)"]["programs"] == ["sample"]
    assert by_stage["evaluation (score)"]["programs"] == ["score"]
