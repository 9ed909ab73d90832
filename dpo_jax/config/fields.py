"""Every field of a run config, classified once: does changing it change the training, the compiled
programs, both, or neither (cosmetic)?

- `TRAINING`: the sequence of parameter updates, or what a checkpoint holds. Resuming a checkpoint
  refuses a change (`run.workdir.config_changes`), and a synthetic demo stage's fingerprint includes
  it (`recipes.synthetic_demo.stage_flags`; the other fields reach the stage untracked).
- `PROGRAMS`: the compiled programs' shapes, layouts, kernels or memory, not merely a constant inside
  them (a loss weight, a learning rate or a seed is a constant of the same program). The dry-run compile
  of a recipe compiles two stages once when they differ only in fields without it
  (`recipes.run._SAME_PROGRAMS`).
- `COSMETIC` (neither): what is logged, evaluated, saved, or where: a run may change it at any time.

An entry names a field (`"model.attention"`) or a whole subtree (`"model.random_init_config"`: a model
architecture's Hugging Face keys). A field the table does not know (a user's own addition) counts as
changing both, the answer that never reuses a checkpoint or a compile wrongly;
tests/config/test_fields.py fails when a field of `base_config()` or of any config in `configs/` is
missing from the table, or when an entry names no field.
"""

from __future__ import annotations

import enum
import json
from typing import Any


class Effect(enum.Flag):
    COSMETIC = 0
    TRAINING = enum.auto()
    PROGRAMS = enum.auto()


COSMETIC, TRAINING, PROGRAMS = Effect.COSMETIC, Effect.TRAINING, Effect.PROGRAMS
BOTH = TRAINING | PROGRAMS

FIELDS: dict[str, Effect] = {
    # What runs.
    "task": BOTH,  # the synthetic experiment instead of one training stage
    "stage": BOTH,
    "seed": TRAINING,
    # The policy. remat and the attention kernel compute the same function (to rounding) another way.
    "model.name_or_path": BOTH,
    "model.random_init_config": BOTH,
    "model.dtype": BOTH,
    "model.param_dtype": BOTH,
    "model.remat_policy": PROGRAMS,
    "model.attention": PROGRAMS,
    "model.scan_layers": BOTH,  # the checkpoint's parameters are stacked per layer: another tree
    "model.dropout_rate": BOTH,
    # The reference: precomputed log-probs are the same numbers, computed in another program.
    "reference.name_or_path": BOTH,
    "reference.param_dtype": BOTH,
    "reference.precompute_logps": PROGRAMS,
    "reference.cache_logps": COSMETIC,
    "reference.logps_cache_dir": COSMETIC,
    "tokenizer": BOTH,
    # The data. Its path is cosmetic: the data is checked by content (the loader's fingerprint, saved
    # with the data position), so moved data resumes. Rows with a shared prompt or packed examples give
    # the same losses (tests/objectives/test_rows.py) but another data position and row count.
    "data.source": TRAINING,
    "data.path": COSMETIC,
    "data.train_split": TRAINING,
    "data.eval_split": COSMETIC,
    "data.max_length": BOTH,
    "data.max_prompt_length": BOTH,
    "data.truncation_mode": TRAINING,
    "data.cache_dir": COSMETIC,
    "data.max_train_examples": TRAINING,
    "data.max_eval_examples": COSMETIC,
    "data.shp_min_score_ratio": TRAINING,
    "data.hh_single_turn": TRAINING,
    "data.share_prompt": BOTH,
    "data.pack": BOTH,
    "data.pack_length": BOTH,
    # The objective: the loss and what it is computed over shape the program; weights are constants.
    "loss": BOTH,
    "beta": TRAINING,
    "label_smoothing": TRAINING,
    "reference_free": BOTH,
    "length_normalize": BOTH,
    "plackett_luce_top_k": BOTH,  # responses per example
    "unlikelihood_alpha": TRAINING,
    # Optimisation: the optimizer's kind and state dtype shape its state; its numbers are constants.
    "optimizer": BOTH,
    "learning_rate": TRAINING,
    "lr_schedule": TRAINING,
    "warmup_steps": TRAINING,
    "weight_decay": TRAINING,
    "adam_b1": TRAINING,
    "adam_b2": TRAINING,
    "adam_eps": TRAINING,
    "adam_mu_dtype": BOTH,
    "max_grad_norm": TRAINING,
    "global_batch_size": BOTH,
    "grad_accum_steps": BOTH,
    "num_epochs": TRAINING,  # through a decaying schedule only (run.workdir.RUN_LENGTH_FIELDS)
    "num_train_steps": TRAINING,
    # A non-finite step never updates the params whatever the policy (the loop checks on the host);
    # the policy only says whether the run goes on.
    "nonfinite_policy": COSMETIC,
    "max_consecutive_skipped_steps": COSMETIC,
    "allow_config_change": COSMETIC,
    # Layout: a checkpoint restores onto any mesh.
    "mesh_shape": PROGRAMS,
    "logical_axis_rules": PROGRAMS,
    # Logging, evaluation, samples, checkpoints, exports.
    "log_every_steps": COSMETIC,
    "eval_every_examples": COSMETIC,
    "eval_batch_size": PROGRAMS,
    "do_first_eval": COSMETIC,
    "eval_samples": PROGRAMS,
    "eval_sample_max_new_tokens": PROGRAMS,
    "eval_sample_temperature": COSMETIC,  # a traced value of the sampler
    "sampling.batch_size": PROGRAMS,
    "sampling.num_samples": PROGRAMS,
    "sampling.max_new_tokens": PROGRAMS,
    "sampling.scorer": PROGRAMS,
    "checkpoint_every_steps": COSMETIC,
    "keep_checkpoints": COSMETIC,
    "export_hf": COSMETIC,
    "tensorboard": COSMETIC,
    "wandb_project": COSMETIC,
    "progress_bar": COSMETIC,
    # PPO (stage=ppo). The KL coefficient is the rollout targets' argument (the adaptive controller
    # moves it); the reward model a dry run compiles has the policy's architecture whatever its path.
    "ppo.reward_model": TRAINING,
    "ppo.reward_label": TRAINING,
    "ppo.value_model": BOTH,
    "ppo.kl_coef": TRAINING,
    "ppo.kl_target": TRAINING,
    "ppo.kl_horizon": TRAINING,
    "ppo.num_epochs": TRAINING,
    "ppo.num_minibatches": BOTH,
    "ppo.minibatch_size": BOTH,
    "ppo.clip_range": TRAINING,
    "ppo.value_clip_range": TRAINING,
    "ppo.vf_coef": TRAINING,
    "ppo.entropy_coef": TRAINING,
    "ppo.gamma": TRAINING,
    "ppo.lam": TRAINING,
    "ppo.whiten_advantages": BOTH,
    "ppo.max_new_tokens": BOTH,
    # The synthetic experiment (configs/synthetic.py). The task and its data draws are what every stage
    # learns from (in every stage's fingerprint); the rest says which stages run beside
    # a stage, where they live and what is evaluated. The per-stage overrides are copied into each
    # stage's own top-level fields, which carry their effect.
    "synthetic.vocab_size": BOTH,
    "synthetic.prompt_length": BOTH,
    "synthetic.response_length": BOTH,
    "synthetic.task_seed": TRAINING,
    "synthetic.reward_scale": TRAINING,
    "synthetic.data_seed": TRAINING,
    "synthetic.num_sft_examples": TRAINING,
    "synthetic.num_pair_prompts": TRAINING,
    "synthetic.pairs_per_prompt": TRAINING,
    "synthetic.num_eval_prompts": TRAINING,
    "synthetic.eval_pairs_per_prompt": TRAINING,
    "synthetic.betas": COSMETIC,
    "synthetic.baselines": COSMETIC,
    "synthetic.reference_workdir": COSMETIC,
    "synthetic.frontier_beta_min": COSMETIC,
    "synthetic.frontier_beta_max": COSMETIC,
    "synthetic.frontier_points": COSMETIC,
    "synthetic.table_batch_size": PROGRAMS,  # the exact evaluator's batch
    "synthetic.best_of_n": COSMETIC,
    "synthetic.ppo_kl_coefs": COSMETIC,
    "synthetic.ppo_rewards": COSMETIC,
    "synthetic.sft": COSMETIC,
    "synthetic.preferred_ft": COSMETIC,
    "synthetic.unlikelihood": COSMETIC,
    "synthetic.reward_model": COSMETIC,
    "synthetic.ppo": COSMETIC,
}

UNKNOWN = BOTH  # a field not in the table: never reuse a checkpoint or a compile on its account


def entry_of(field: str) -> str | None:
    """The table's entry that classifies the dotted `field`: itself or its nearest enclosing subtree."""
    parts = field.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in FIELDS:
            return name
    return None


def effect(field: str) -> Effect:
    entry = entry_of(field)
    return UNKNOWN if entry is None else FIELDS[entry]


def changes_training(field: str) -> bool:
    return bool(effect(field) & TRAINING)


def changes_programs(field: str) -> bool:
    return bool(effect(field) & PROGRAMS)


def entries_without(kind: Effect) -> tuple[str, ...]:
    """The table's entries (fields and subtrees) whose effect does not include `kind`."""
    return tuple(name for name, value in FIELDS.items() if not value & kind)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A config (ConfigDict or its `to_dict()`) as {dotted field: leaf}; tuples become lists (JSON)."""
    if hasattr(tree, "to_dict"):
        tree = json.loads(tree.to_json_best_effort())
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, tuple):
        tree = list(tree)
    return {prefix[:-1]: tree}


def training_fields(config) -> dict[str, Any]:
    """The dotted fields of `config` that change the training, sorted: what a checkpoint records."""
    return {name: value for name, value in sorted(flatten(config).items()) if changes_training(name)}
