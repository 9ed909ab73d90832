"""The demo experiment's own steps (`python -m dpo_jax.main --config=configs/synthetic.py`), each run in
its own directory by `python -m dpo_jax.synthetic.steps` beside the sweep's (sweep.py: `sft`, `pairs`,
`dpo`), in the order dpo_jax/recipes/synthetic_demo.py gives them:
  * `train_baseline`: preferred-FT (SFT on the chosen responses) or unlikelihood, from pi_ref, on the
    pair set DPO trains on (`run.json` names the method);
  * `train_reward_model`, `train_ppo`: the RLHF baselines (rlhf.py) on the same pairs and prompts;
  * `evaluate_demo`: every policy's exact statistics on the held-out prompts against the frontier,
    the RLHF baselines' and best-of-N's, into `synthetic_eval.json` (report.py prints and draws it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dpo_jax.synthetic import report, rlhf
from dpo_jax.synthetic.experiment import (
    BASELINES,
    DATA_FIELDS,
    PolicyTables,
    draw_prompts,
    evaluate_policies,
    frontier_grid,
    make_task,
)
from dpo_jax.synthetic.stages import stage_config, train_stage
from dpo_jax.synthetic.sweep import RUN_FILE, load_pairs, pair_data, write_json

logger = logging.getLogger("dpo_jax")


def train_baseline(config, name: str, sft_dir: str, pairs_dir: str, workdir: str) -> None:
    if name not in BASELINES:
        raise ValueError(f"baseline {name!r}: known {sorted(BASELINES)}")
    stage, loss = BASELINES[name]
    cfg = stage_config(config, stage=stage, loss=loss, init=str(sft_dir), overrides=config.synthetic[name])
    pairs = load_pairs(pairs_dir)
    responses = "chosen" if stage == "sft" else "pairs"
    seconds = train_stage(cfg, Path(workdir), lambda: pair_data(config.synthetic, pairs, stage, responses))
    write_json(Path(workdir) / RUN_FILE, {"method": name, "loss": loss, "seconds": seconds})


def train_reward_model(config, sft_dir: str, pairs_dir: str, workdir: str) -> None:
    pairs = load_pairs(pairs_dir)
    rlhf.train_reward_model(
        config, sft_dir, lambda: pair_data(config.synthetic, pairs, "dpo", "pairs"), workdir
    )


def train_ppo(
    config, sft_dir: str, workdir: str, *, reward: str, kl_coef: float, reward_model_dir: str
) -> None:
    settings = config.synthetic
    task = make_task(settings)
    prompts = draw_prompts(task, settings).pairs
    seconds = rlhf.train_ppo(
        config,
        task,
        prompts,
        sft_dir,
        workdir,
        reward=reward,
        kl_coef=kl_coef,
        reward_model_dir=reward_model_dir,
    )
    write_json(
        Path(workdir) / RUN_FILE, {"method": "ppo", "reward": reward, "kl_coef": kl_coef, "seconds": seconds}
    )


def evaluate_demo(
    config, pairs_dir: str, run_dirs: list[str], workdir: str, *, reward_model_dir: str = ""
) -> dict:
    """The evaluation record of the policies in `run_dirs` (each with its `run.json`), in `workdir`."""
    settings = config.synthetic
    task = make_task(settings)
    prompts = draw_prompts(task, settings)
    pairs = load_pairs(pairs_dir)
    logp_ref, reward = pairs.eval_logp_ref, task.reward(prompts.eval, task.all_completions())
    tables = PolicyTables(config, task)
    policy_logps, ppo_logps, betas = {}, {}, []
    for run_dir in run_dirs:
        record = json.loads((Path(run_dir) / RUN_FILE).read_text())
        logp = tables.table(tables.load(Path(run_dir)), prompts.eval)
        if record["method"] == "dpo":
            policy_logps[("dpo", record["beta"])] = logp
            betas.append(record["beta"])
        elif record["method"] == "ppo":
            ppo_logps[(record["reward"], record["kl_coef"])] = logp
        else:
            policy_logps[(record["method"],)] = logp
    if not betas:
        raise ValueError("the evaluation needs at least one DPO run")
    result = evaluate_policies(
        task, prompts.eval, logp_ref, policy_logps, betas, frontier_grid(settings, betas)
    )
    proxy_table = None
    if reward_model_dir:
        proxy_table = rlhf.reward_model_table(
            Path(reward_model_dir), task, prompts.eval, batch_size=settings.table_batch_size
        )
    result.update(
        rlhf.evaluate_rlhf(
            task,
            logp_ref,
            reward,
            proxy_table=proxy_table,
            ppo_logps=ppo_logps,
            sizes=rlhf.best_of_n_sizes(settings),
            pairs=pairs,
        )
    )
    result.update(
        report.headline(result, float(config.beta) if float(config.beta) in betas else betas[0]),
        loss=config.loss,
        num_pairs=int(len(pairs.chosen)),
        num_eval_prompts=int(len(prompts.eval)),
        settings={field: settings[field] for field in DATA_FIELDS},
    )
    write_json(Path(workdir) / report.EVAL_FILE, result)
    logger.info(
        "evaluation: %d policies, gain ratio %.3f at beta %g",
        len(run_dirs),
        result["gain_ratio"],
        result["beta"],
    )
    return result
