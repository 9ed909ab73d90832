"""Where a rollout's scores come from: `RewardFn(prompt_ids, prompt_mask, response_ids, response_mask)
-> [B] float32`, host arrays in, host array out.

  * a reward model of ours (`reward_model_fn`: a GPT-2 / GPT-NeoX `ScalarHeadModel`, a stage=reward_model
    run or its export): its score at the last real token of the policy's prompt + response ids, the ids
    it was trained on;
  * any other Hugging Face sequence-classification model (`text_reward_fn`, PPO-GT): the policy's ids are
    decoded with the policy's tokenizer and the classifier reads the text prompt + response with its own
    tokenizer, as the judges do (`judges.sequence_classifier`). A classifier's reward is its probability
    of `config.ppo.reward_label` (default its positive class): the same p(positive) the sentiment frontier
    plots and make_pairs ranks by, so PPO-GT optimises the frontier's y axis. A one-output reward model
    of another architecture (e.g. DeBERTa) gives its logit for the text pair;
  * any given function, e.g. the synthetic task's hidden true reward.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax import MissingInputError, UserError
from dpo_jax.data import load_tokenizer
from dpo_jax.judges.scoring import score_param_shardings, score_program
from dpo_jax.models.config import ARCHITECTURES
from dpo_jax.models.hf_io import hf_num_labels, read_hf_config, resolve_checkpoint_dir
from dpo_jax.models.loading import load_scalar_head_model, resolve_model_path, tokenizer_source
from dpo_jax.sharding import (
    gather_to_host,
    make_global_batch,
)

logger = logging.getLogger("dpo_jax")

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# The kinds of `config.ppo.reward_model` (`reward_model_source`).
TOKEN_IDS = "token_ids"  # a GPT-2 / GPT-NeoX / GPT-J reward head: scores the policy's ids
CLASSIFIER = "classifier"  # >= 2 labels: p(reward_label | text)
TEXT_REWARD_MODEL = "text_reward_model"  # one output, another architecture: its logit for the text pair
_TOKEN_ID_MODEL_TYPES = ARCHITECTURES  # the architectures dpo_jax.models implements


def reward_model_fn(model, params, mesh, rules=None) -> RewardFn:
    """A `RewardFn` scoring with a reward model whose params are (possibly sharded) on `mesh`: the
    judges' scoring program (`judges.scoring.score_program`, its value at each row's last real token)
    on [left-padded prompt | right-padded response]."""
    score = score_program(model, mesh, rules)

    def reward(prompt_ids, prompt_mask, response_ids, response_mask):
        batch = make_global_batch(
            {
                "input_ids": np.concatenate([prompt_ids, response_ids], axis=1).astype(np.int32),
                "attention_mask": np.concatenate([prompt_mask, response_mask], axis=1).astype(np.int32),
            },
            mesh,
        )
        scores = gather_to_host(score(params, batch["input_ids"], batch["attention_mask"]))
        return np.asarray(scores, np.float32)[:, 0]

    return reward


def decode_rows(tokenizer, ids: np.ndarray, mask: np.ndarray) -> list[str]:
    """The text of each row's real tokens (mask 1), special tokens (EOS, padding) dropped."""
    rows = [np.asarray(row)[np.asarray(keep).astype(bool)].tolist() for row, keep in zip(ids, mask)]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def text_reward_fn(judge, tokenizer) -> RewardFn:
    """A `RewardFn` from a scoring judge (`judge.score(prompts, responses) -> [N]`, texts in): the rows
    are decoded with the policy's `tokenizer` and scored as text."""

    def reward(prompt_ids, prompt_mask, response_ids, response_mask):
        prompts = decode_rows(tokenizer, prompt_ids, prompt_mask)
        responses = decode_rows(tokenizer, response_ids, response_mask)
        return np.asarray(judge.score(prompts, responses), np.float32)

    return reward


@dataclasses.dataclass(frozen=True)
class RewardSource:
    """What `config.ppo.reward_model` is: its resolved directory and kind (TOKEN_IDS, CLASSIFIER,
    TEXT_REWARD_MODEL), read from its config.json before anything is loaded."""

    directory: str
    kind: str
    label: str  # config.ppo.reward_label ("" = the positive class)

    def judge(self, config, mesh, rules):
        """The text-scoring judge of a CLASSIFIER or TEXT_REWARD_MODEL, its params on the run's mesh."""
        from dpo_jax.judges import ClassifierJudge, JudgeError, RewardModelJudge

        options = dict(batch_size=config.global_batch_size, mesh=mesh, rules=rules)
        try:
            if self.kind == CLASSIFIER:
                return ClassifierJudge(self.directory, positive_label=self.label or None, **options)
            return RewardModelJudge(self.directory, **options)
        except JudgeError as error:
            raise UserError(f"config.ppo.reward_model={config.ppo.reward_model!r}: {error}") from error


def reward_model_source(config) -> RewardSource:
    """`config.ppo.reward_model` checked and classified (module docstring); UserError (MissingInputError
    for a missing path) naming the field when it is empty, missing, unreadable or not a sequence
    classifier, or when `config.ppo.reward_label` does not fit it."""
    path = str(config.ppo.reward_model or "")
    label = str(config.ppo.get("reward_label", "") or "")
    if not path:
        raise UserError(
            "config.ppo.reward_model is empty: PPO needs a reward model (a stage=reward_model workdir or "
            "export, or a Hugging Face sequence classifier for PPO-GT)"
        )
    try:
        directory = resolve_checkpoint_dir(resolve_model_path(path))
        hf_config = read_hf_config(directory)
    except MissingInputError as error:
        raise MissingInputError(f"config.ppo.reward_model: {error}") from error
    except (OSError, ValueError) as error:
        raise UserError(f"config.ppo.reward_model={path!r} is unreadable: {error}") from error
    architectures = hf_config.get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise UserError(
            f"config.ppo.reward_model={path!r} is not a sequence-classification model (architectures "
            f"{architectures}): PPO needs a reward model or a classifier"
        )
    if hf_num_labels(hf_config) >= 2:
        return RewardSource(directory, CLASSIFIER, label)
    if label:
        raise UserError(
            f"config.ppo.reward_label={label!r}: {path} has one output (a reward model), no labels to choose"
        )
    kind = TOKEN_IDS if hf_config.get("model_type") in _TOKEN_ID_MODEL_TYPES else TEXT_REWARD_MODEL
    return RewardSource(directory, kind, label)


def load_reward_model_fn(config, mesh, rules) -> RewardFn:
    """The `RewardFn` of `config.ppo.reward_model` (`reward_model_source` says which kind): a reward head
    scores the policy's token ids, its params laid out on the mesh by their logical axes like the
    policy's; any other sequence classifier scores the decoded texts (`text_reward_fn`)."""
    source = reward_model_source(config)
    logger.info("PPO reward: %s, a %s", source.directory, source.kind.replace("_", " "))
    if source.kind != TOKEN_IDS:
        return text_reward_fn(source.judge(config, mesh, rules), load_tokenizer(tokenizer_source(config)))
    model, host_params = load_scalar_head_model(
        config.model,
        param_dtype=config.reference.param_dtype,
        seed=config.seed,
        name_or_path=source.directory,
    )
    shardings = score_param_shardings(model, mesh, rules)
    return reward_model_fn(model, jax.tree.map(jax.device_put, host_params, shardings), mesh, rules)


def as_float_scores(scores, num_rows: int) -> np.ndarray:
    """A reward function's output checked: [B] finite floats."""
    scores = np.asarray(jnp.asarray(scores), np.float32)
    if scores.shape != (num_rows,):
        raise ValueError(f"the reward function returned shape {scores.shape}; expected ({num_rows},)")
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            f"the reward function returned non-finite scores: {scores[~np.isfinite(scores)][:5]}"
        )
    return scores
