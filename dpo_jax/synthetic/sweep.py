"""The gain-vs-pairs sweep's steps, each run in its own directory by `python -m dpo_jax.synthetic.steps`.

The `synthetic` recipe (dpo_jax/recipes/synthetic.py) chains them; the demo (recipes/synthetic_demo.py)
runs `train_reference`, `draw_pairs` and `train_dpo` too, beside its own steps (demo.py):
  * `train_reference`: SFT (pi_ref) on the hidden generator's samples, then pi_ref's exact tables over
    the pair prompts and the eval prompts (`reference_tables.npz`), shared by every later step;
  * `draw_pairs`: one preference pair set (`pairs.npz`) at `synthetic.pairs_per_prompt`, drawn exactly
    from pi_ref's table (the same seeds at every size: the demo's pairs at the demo's size);
  * `train_dpo`: DPO from pi_ref on one pair set (`run.json` records what it ran with);
  * `run_controls`: the tabular policy on each pair set and the population loss (controls.py);
  * `evaluate`: every DPO run's exact statistics on the held-out eval prompts and on the first
    `train_eval_prompts` pair prompts (where the tabular controls live), and the departure analysis.
Every step keeps the settings of `configs/synthetic.py` (the task, the model, DPO's training fields).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jax
import numpy as np

from dpo_jax.synthetic.controls import departure_by_reference_probability, population_dpo, tabular_dpo
from dpo_jax.synthetic.data import prepared_from_arrays
from dpo_jax.synthetic.exact import method_stats, optimal_logprobs, policy_stats
from dpo_jax.synthetic.experiment import (
    PolicyTables,
    PreferenceData,
    draw_preference_data,
    draw_prompts,
    make_task,
    sft_data,
)
from dpo_jax.synthetic.stages import stage_config, train_stage

logger = logging.getLogger("dpo_jax")

REFERENCE_TABLES = "reference_tables.npz"
PAIRS_FILE = "pairs.npz"
RUN_FILE = "run.json"
CONTROLS_FILE = "controls.json"
EVALUATION_FILE = "evaluation.json"


def write_json(path: Path, value) -> None:
    if jax.process_index() == 0:
        path.write_text(json.dumps(value, indent=1))


def train_reference(config, workdir: str) -> None:
    settings, root = config.synthetic, Path(workdir)
    task = make_task(settings)
    prompts = draw_prompts(task, settings)
    sft_cfg = stage_config(config, stage="sft", loss="sft", init="random", overrides=settings.sft)
    train_stage(sft_cfg, root, lambda: sft_data(task, settings, prompts))
    tables = PolicyTables(config, task)
    params = tables.load(root)
    if jax.process_index() == 0:
        np.savez(
            root / REFERENCE_TABLES,
            pairs=tables.table(params, prompts.pairs),
            eval=tables.table(params, prompts.eval),
        )


def reference_tables(sft_dir: str) -> dict[str, np.ndarray]:
    path = Path(sft_dir) / REFERENCE_TABLES
    if not path.exists():
        raise FileNotFoundError(f"{path}: no reference tables; run the sft step first")
    with np.load(path) as stored:
        return {"pairs": stored["pairs"], "eval": stored["eval"]}


def draw_pairs(config, sft_dir: str, workdir: str) -> None:
    settings, root = config.synthetic, Path(workdir)
    task = make_task(settings)
    tables = reference_tables(sft_dir)
    data = draw_preference_data(task, settings, draw_prompts(task, settings), tables["pairs"], tables["eval"])
    if jax.process_index() == 0:
        np.savez(root / PAIRS_FILE, **dataclasses.asdict(data))
    write_json(
        root / RUN_FILE, {"pairs_per_prompt": settings.pairs_per_prompt, "num_pairs": int(len(data.chosen))}
    )
    logger.info("pairs: %d (%d per prompt drawn, ties dropped)", len(data.chosen), settings.pairs_per_prompt)


def pair_data(settings, pairs: PreferenceData, stage: str, responses: str):
    """A stage's `PreparedData` from a pair set: `responses` "pairs" (chosen, rejected) or "chosen"."""
    prompts = draw_prompts(make_task(settings), settings)
    return prepared_from_arrays(
        stage,
        pairs.arrays(prompts, responses=responses, split="train"),
        pairs.arrays(prompts, responses=responses, split="eval"),
    )


def load_pairs(pairs_dir: str) -> PreferenceData:
    path = Path(pairs_dir) / PAIRS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no pair set; run the pairs step first")
    with np.load(path) as stored:
        return PreferenceData(**{f.name: stored[f.name] for f in dataclasses.fields(PreferenceData)})


def train_dpo(config, sft_dir: str, pairs_dir: str, workdir: str, *, variant: str = "") -> None:
    settings, root = config.synthetic, Path(workdir)
    pairs = load_pairs(pairs_dir)
    cfg = stage_config(config, stage="dpo", loss=config.loss, init=str(sft_dir))
    seconds = train_stage(cfg, root, lambda: pair_data(settings, pairs, "dpo", "pairs"))
    write_json(
        root / RUN_FILE,
        {
            "method": "dpo",
            "beta": float(config.beta),
            "loss": config.loss,
            "pairs_per_prompt": int(settings.pairs_per_prompt),
            "num_pairs": int(len(pairs.chosen)),
            "variant": variant,
            "learning_rate": float(config.learning_rate),
            "num_train_steps": int(config.num_train_steps),
            "global_batch_size": int(config.global_batch_size),
            "seconds": seconds,
        },
    )


def _tabular_pairs(task, pairs: PreferenceData, num_prompts: int):
    kept = pairs.prompt_index < num_prompts
    return (
        pairs.prompt_index[kept],
        task.completion_index(pairs.chosen[kept]),
        task.completion_index(pairs.rejected[kept]),
    )


def run_controls(
    config,
    sft_dir: str,
    pairs_dirs: list[str],
    workdir: str,
    *,
    train_eval_prompts: int,
    population_prompts: int,
    learning_rate: float,
    num_steps: int,
) -> dict:
    """The tabular policy on each pair set and at the population loss, at `config.beta`.

    Both live on the first pair prompts (a tabular policy learns nothing about a prompt it has no
    pairs for): `train_eval_prompts` of them for the pair sets, `population_prompts` for the
    population loss (its cost is C**2 per prompt)."""
    settings, beta = config.synthetic, float(config.beta)
    task = make_task(settings)
    prompts = draw_prompts(task, settings)
    logp_ref = reference_tables(sft_dir)["pairs"]
    reward = task.reward(prompts.pairs, task.all_completions())
    count = min(train_eval_prompts, len(prompts.pairs))
    result = {"beta": beta, "train_eval_prompts": count, "tabular": []}
    for pairs_dir in pairs_dirs:
        pairs = load_pairs(pairs_dir)
        trajectory = tabular_dpo(
            logp_ref[:count],
            reward[:count],
            _tabular_pairs(task, pairs, count),
            beta=beta,
            learning_rate=learning_rate,
            num_steps=num_steps,
        )
        ratios = [p["gain_ratio"] for p in trajectory]
        best = trajectory[int(np.nanargmax(ratios))] if not np.all(np.isnan(ratios)) else trajectory[-1]
        run = json.loads((Path(pairs_dir) / RUN_FILE).read_text())
        result["tabular"].append({**run, "final": trajectory[-1], "best": best, "trajectory": trajectory})
        logger.info(
            "tabular control, %d pairs per prompt: gain ratio %.3f (final), %.3f (best step %d)",
            run["pairs_per_prompt"],
            trajectory[-1]["gain_ratio"],
            best["gain_ratio"],
            best["step"],
        )
    size = min(population_prompts, len(prompts.pairs))
    result["population"] = {"prompts": size, **population_dpo(logp_ref[:size], reward[:size], beta=beta)}
    logger.info("population control: gain ratio %.6f", result["population"]["gain_ratio"])
    write_json(Path(workdir) / CONTROLS_FILE, result)
    return result


def evaluate(config, sft_dir: str, run_dirs: list[str], workdir: str, *, train_eval_prompts: int) -> dict:
    """Every DPO run's exact statistics (eval prompts and the first pair prompts), pi*'s at each run's
    beta, and where the largest pair set's default run departs from pi* (eval prompts)."""
    settings = config.synthetic
    task = make_task(settings)
    prompts = draw_prompts(task, settings)
    tables_ref = reference_tables(sft_dir)
    count = min(train_eval_prompts, len(prompts.pairs))
    splits = {
        "eval": (prompts.eval, tables_ref["eval"]),
        "train": (prompts.pairs[:count], tables_ref["pairs"][:count]),
    }
    rewards = {name: task.reward(p, task.all_completions()) for name, (p, _) in splits.items()}
    tables = PolicyTables(config, task)
    runs, logps = [], {}
    for run_dir in run_dirs:
        record = json.loads((Path(run_dir) / RUN_FILE).read_text())
        params = tables.load(Path(run_dir))
        entry = {"stage": Path(run_dir).name, **record}
        for name, (split_prompts, logp_ref) in splits.items():
            logp = tables.table(params, split_prompts)
            entry[name] = method_stats(logp, logp_ref, rewards[name])
            if name == "eval":
                logps[entry["stage"]] = logp
        runs.append(entry)
    betas = sorted({run["beta"] for run in runs})
    result = {
        "num_eval_prompts": len(prompts.eval),
        "train_eval_prompts": count,
        "reference": {name: policy_stats(ref, ref, rewards[name]) for name, (_, ref) in splits.items()},
        "optimum": [
            {
                "beta": beta,
                **{
                    name: policy_stats(optimal_logprobs(ref, rewards[name], beta), ref, rewards[name])
                    for name, (_, ref) in splits.items()
                },
            }
            for beta in betas
        ],
        "runs": runs,
        "departure": [],
    }
    for beta in betas:
        default_runs = [r for r in runs if r["beta"] == beta and not r["variant"]]
        if not default_runs:
            continue
        largest = max(default_runs, key=lambda r: r["pairs_per_prompt"])
        bins = departure_by_reference_probability(
            logps[largest["stage"]], tables_ref["eval"], rewards["eval"], beta
        )
        result["departure"].append({"stage": largest["stage"], "beta": beta, "bins": bins})
    write_json(Path(workdir) / EVALUATION_FILE, result)
    return result
