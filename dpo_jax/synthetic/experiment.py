"""The pieces of the paper's controlled experiment on a task with a known optimum (the demo,
`python -m dpo_jax.main --config=configs/synthetic.py`): the task, its prompts and data draws, the exact
tables of a saved policy, and the evaluation record.

The demo's stages are steps of `python -m dpo_jax.synthetic.steps` run by the recipe engine
(dpo_jax/recipes/synthetic_demo.py):
  1. `sft`: a tiny GPT-2 fitted to the hidden generator's samples; it is pi_ref;
  2. `pairs`: preference pairs drawn exactly from pi_ref's table over all completions of the pair
     prompts, labelled by Bradley-Terry under the hidden reward;
  3. `preferred_ft` (SFT on the chosen responses) and `unlikelihood`, both from pi_ref, as in the paper;
  4. `dpo_beta_<beta>` for each beta of the run, from pi_ref with pi_ref as the reference (another
     preference loss, `config.loss`, takes DPO's place and its name in the directory and the table);
  5. `evaluation`: every policy evaluated exactly on held-out prompts: its KL to pi_ref and expected
     reward, the optimum's reward at that KL and the gain ratio (`evaluate_policies`, exact.py).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from dpo_jax.models.loading import load_model
from dpo_jax.synthetic.data import prepared_from_arrays
from dpo_jax.synthetic.exact import frontier, method_stats, optimal_logprobs, policy_stats
from dpo_jax.synthetic.tables import all_completion_logprobs
from dpo_jax.synthetic.task import SyntheticTask

logger = logging.getLogger("dpo_jax")

BASELINES = {"preferred_ft": ("sft", "sft"), "unlikelihood": ("dpo", "unlikelihood")}  # name: (stage, loss)
# The fields of `config.synthetic` that decide the data; the rest (betas, where things live) do not.
DATA_FIELDS = (
    "vocab_size",
    "prompt_length",
    "response_length",
    "task_seed",
    "reward_scale",
    "data_seed",
    "num_sft_examples",
    "num_pair_prompts",
    "pairs_per_prompt",
    "num_eval_prompts",
    "eval_pairs_per_prompt",
)


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in str(text).split(",") if item.strip()]


def run_betas(config) -> list[float]:
    """The DPO betas of this run: `synthetic.betas` (comma separated), else `config.beta`."""
    betas = [float(b) for b in parse_list(config.synthetic.betas)] or [float(config.beta)]
    if any(not b > 0 for b in betas) or len(set(betas)) != len(betas):
        raise ValueError(f"config.synthetic.betas={config.synthetic.betas!r}: need distinct betas > 0")
    return betas


def baselines(config) -> list[str]:
    names = parse_list(config.synthetic.baselines)
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ValueError(f"config.synthetic.baselines: unknown {unknown}; known: {sorted(BASELINES)}")
    return names


def make_task(settings) -> SyntheticTask:
    return SyntheticTask(
        vocab_size=settings.vocab_size,
        prompt_length=settings.prompt_length,
        response_length=settings.response_length,
        seed=settings.task_seed,
        reward_scale=settings.reward_scale,
    )


def check_model(config, task: SyntheticTask) -> None:
    """SFT starts from a random model of `config.model.random_init_config`: it must fit the task."""
    fields = dict(config.model.random_init_config)
    vocab = fields.get("vocab_size")
    positions = fields.get("n_positions", fields.get("max_position_embeddings"))
    if vocab != task.vocab_size:
        raise ValueError(
            f"config.model.random_init_config.vocab_size={vocab} must equal the task's vocab_size={task.vocab_size}: "
            "the exact evaluator needs a distribution over the task's completions only"
        )
    if positions is not None and positions < task.prompt_length + task.response_length:
        raise ValueError(f"the model's {positions} positions cannot hold prompt + response tokens")


@dataclasses.dataclass(frozen=True)
class Prompts:
    sft: np.ndarray  # [num_sft_examples, P], uniform with repeats
    pairs: np.ndarray  # [num_pair_prompts, P], distinct
    eval: np.ndarray  # [num_eval_prompts, P], distinct, none among the pair prompts


def _rng(settings, stream: int) -> np.random.Generator:
    """One independent generator per use of randomness, so changing one size changes nothing else."""
    return np.random.default_rng([settings.data_seed, stream])


def draw_prompts(task: SyntheticTask, settings) -> Prompts:
    space = task.vocab_size**task.prompt_length
    needed = settings.num_pair_prompts + settings.num_eval_prompts
    if needed > space:
        raise ValueError(f"{needed} distinct pair and eval prompts asked for; the task has {space} prompts")
    # Distinct prompts, so the evaluation is on prompts DPO never saw a pair for; eval prompts first,
    # so they do not depend on the number of pair prompts.
    order = _rng(settings, 0).permutation(space)[:needed]
    distinct = np.stack(np.unravel_index(order, (task.vocab_size,) * task.prompt_length), axis=-1)
    distinct = distinct.astype(np.int32)
    return Prompts(
        sft=task.sample_prompts(settings.num_sft_examples, _rng(settings, 1)),
        pairs=distinct[settings.num_eval_prompts :],
        eval=distinct[: settings.num_eval_prompts],
    )


def sft_data(task: SyntheticTask, settings, prompts: Prompts):
    """SFT's `PreparedData`: one hidden-generator sample per SFT prompt, held out on the eval prompts."""
    rng = _rng(settings, 2)
    train = (prompts.sft, task.generator_samples(prompts.sft, rng)[:, None])
    held_out = (prompts.eval, task.generator_samples(prompts.eval, rng)[:, None])
    return prepared_from_arrays("sft", train, held_out)


@dataclasses.dataclass(frozen=True)
class PreferenceData:
    """Pairs (chosen, rejected) [M, T] for rows `prompt_index` [M] of their prompts, train and eval."""

    chosen: np.ndarray
    rejected: np.ndarray
    prompt_index: np.ndarray
    eval_chosen: np.ndarray
    eval_rejected: np.ndarray
    eval_prompt_index: np.ndarray
    eval_logp_ref: np.ndarray  # [num_eval_prompts, C] the reference table the evaluation uses

    def arrays(self, prompts: Prompts, *, responses: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(prompts [M, P], responses [M, K, T]) with K = 2 (chosen, rejected) or 1 (chosen)."""
        prefix = "" if split == "train" else "eval_"
        rows = getattr(self, prefix + "prompt_index")
        kept = [getattr(self, prefix + "chosen")]
        if responses == "pairs":
            kept.append(getattr(self, prefix + "rejected"))
        return (prompts.pairs if split == "train" else prompts.eval)[rows], np.stack(kept, axis=1)


class PolicyTables:
    """Exact [N, C] tables of log pi(y|x) of saved policies, through one compiled program."""

    def __init__(self, config, task: SyntheticTask):
        self.config = config
        self.task = task
        self._model = None

    def load(self, stage_dir: Path):
        """The host params of a stage's exported policy."""
        model, params = load_model(
            self.config.model, param_dtype="float32", seed=self.config.seed, name_or_path=str(stage_dir)
        )
        # Every stage has the architecture of the first one loaded, so one module (a static argument
        # of the compiled table program) serves all of them.
        if self._model is None:
            self._model = model
        return params

    def table(self, params, prompts: np.ndarray) -> np.ndarray:
        return all_completion_logprobs(
            self._model,
            params,
            prompts,
            vocab_size=self.task.vocab_size,
            response_length=self.task.response_length,
            batch_size=self.config.synthetic.table_batch_size,
        )


def draw_preference_data(
    task, settings, prompts: Prompts, logp_pairs: np.ndarray, eval_logp_ref: np.ndarray
) -> PreferenceData:
    """The train and eval pairs from pi_ref's tables over the pair prompts and the eval prompts."""
    rng = _rng(settings, 3)
    logger.info(
        "pairs: sampling %d pairs per prompt for %d prompts (and %d per eval prompt) exactly from pi_ref's "
        "table of every completion; takes a while on a CPU",
        settings.pairs_per_prompt,
        len(prompts.pairs),
        settings.eval_pairs_per_prompt,
    )
    chosen, rejected, index = task.sample_pairs(prompts.pairs, logp_pairs, rng, settings.pairs_per_prompt)
    eval_pairs = task.sample_pairs(prompts.eval, eval_logp_ref, rng, settings.eval_pairs_per_prompt)
    logger.info("pairs: %d train and %d eval pairs sampled", len(chosen), len(eval_pairs[0]))
    return PreferenceData(chosen, rejected, index, *eval_pairs, eval_logp_ref)


def frontier_grid(settings, betas) -> list[float]:
    grid = np.geomspace(settings.frontier_beta_min, settings.frontier_beta_max, settings.frontier_points)
    return sorted(set(grid.tolist()) | set(betas))


def evaluate_policies(task, prompts_eval, logp_ref, policy_logps: dict, betas, frontier_betas) -> dict:
    """The evaluation record: exact statistics of every policy on the eval prompts (see module doc)."""
    reward = task.reward(prompts_eval, task.all_completions())
    generator = task.generator_logprobs(prompts_eval)
    result = {
        "reference": policy_stats(logp_ref, logp_ref, reward),
        "generator": method_stats(generator, logp_ref, reward),
        "reward_maximum": float(np.mean(reward.max(-1))),
        "dpo_by_beta": [],
        "optimum_by_beta": [],
    }
    for beta in betas:
        dpo = method_stats(policy_logps[("dpo", beta)], logp_ref, reward)
        result["dpo_by_beta"].append({"beta": beta, **dpo})
        optimum = policy_stats(optimal_logprobs(logp_ref, reward, beta), logp_ref, reward)
        result["optimum_by_beta"].append({"beta": beta, **optimum})
    for name, logp in policy_logps.items():
        if name[0] != "dpo":
            result[name[0]] = method_stats(logp, logp_ref, reward)
    result["frontier"] = frontier(logp_ref, reward, frontier_betas)
    return result
