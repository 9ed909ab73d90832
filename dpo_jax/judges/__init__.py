"""Judges: which of two responses is better, for win rates and for labelling preference pairs.

    judge = make_judge("openai", template="summarization", cache_path="verdicts.jsonl")
    verdicts = judge.judge([Comparison(prompt, response_a, response_b), ...])   # "A" / "B" / "tie" / None
    classifier = make_judge("classifier", name_or_path="siebert/sentiment-roberta-large-english")
    rewards = classifier.score(prompts, responses)                               # p(positive), [N]

See base.py for the interface, openai_chat.py, sequence_classifier.py for the judges.
"""

from dpo_jax.judges.base import TIE, A, B, Comparison, Judge, JudgeError, ScoringJudge, Verdict
from dpo_jax.judges.chat_prompts import (
    DEFAULT_ANSWER_PREFIX,
    TASK_TEMPLATES,
    TEMPLATES,
    JudgePrompt,
    load_template,
    parse_choice,
)
from dpo_jax.judges.openai_chat import DEFAULT_BASE_URL, DEFAULT_MODEL, OpenAIJudge
from dpo_jax.judges.sequence_classifier import DEFAULT_SENTIMENT_CLASSIFIER, ClassifierJudge, RewardModelJudge

JUDGES = {"openai": OpenAIJudge, "reward_model": RewardModelJudge, "classifier": ClassifierJudge}


def make_judge(kind: str, **kwargs) -> Judge:
    """A judge by name: "openai" (keyword arguments of OpenAIJudge), "reward_model" or "classifier"
    (`name_or_path=` and the keyword arguments of their classes)."""
    if kind not in JUDGES:
        raise ValueError(f"unknown judge {kind!r}; known: {sorted(JUDGES)}")
    if kind in ("reward_model", "classifier"):
        return JUDGES[kind](kwargs.pop("name_or_path"), **kwargs)
    return JUDGES[kind](**kwargs)


__all__ = [
    "A",
    "B",
    "DEFAULT_ANSWER_PREFIX",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_SENTIMENT_CLASSIFIER",
    "JUDGES",
    "TASK_TEMPLATES",
    "TEMPLATES",
    "TIE",
    "ClassifierJudge",
    "Comparison",
    "Judge",
    "JudgeError",
    "JudgePrompt",
    "OpenAIJudge",
    "RewardModelJudge",
    "ScoringJudge",
    "Verdict",
    "load_template",
    "make_judge",
    "parse_choice",
]
