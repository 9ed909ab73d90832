"""Judges that score each response with a Hugging Face sequence-classification model (PyTorch).

  * `RewardModelJudge`: a reward model with one output (the score is that logit), e.g. an
    OpenAssistant DeBERTa reward model or a GPT-2 reward head; the higher score wins.
  * `ClassifierJudge`: a text classifier's probability of its positive class, e.g. the DPO paper's
    IMDb ground-truth reward `siebert/sentiment-roberta-large-english` (labels NEGATIVE / POSITIVE).

The classifier scores the text prompt + response (for IMDb: the review prefix and its continuation);
the reward model scores the text pair (prompt, response), joined by its tokenizer as in its training
(e.g. [CLS] question [SEP] answer [SEP] for DeBERTa). Inputs are truncated to the model's maximum
length from the left (the response is what is judged). Models are loaded
with `AutoModelForSequenceClassification.from_pretrained` from a local directory or a hub name.
torch is an optional dependency (`pip install dpo_jax[torch]`); without it these judges say so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from dpo_jax.judges.base import JudgeError, ScoringJudge

DEFAULT_SENTIMENT_CLASSIFIER = "siebert/sentiment-roberta-large-english"
_POSITIVE = re.compile(r"^(pos|positive|label_1)$", re.IGNORECASE)


def _import_torch():
    try:
        import torch
    except ImportError as error:
        raise JudgeError(
            "the reward_model and classifier judges run Hugging Face models in PyTorch, which is not "
            "installed: pip install 'dpo_jax[torch]' (a CPU build is enough for small models)"
        ) from error
    return torch


def _positive_index(config, name: str) -> int:
    labels = {int(index): str(label) for index, label in (config.id2label or {}).items()}
    matches = [index for index, label in labels.items() if _POSITIVE.match(label)]
    if len(matches) == 1:
        return matches[0]
    if config.num_labels == 2:
        return 1  # the convention of binary sentiment heads without label names
    raise JudgeError(
        f"{name}: cannot tell the positive class among labels {labels}; pass positive_label explicitly"
    )


class _SequenceClassifier(ScoringJudge):
    def __init__(
        self, name_or_path: str, *, batch_size: int = 16, max_length: int | None = None, device=None
    ):
        torch = _import_torch()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self._model = AutoModelForSequenceClassification.from_pretrained(name_or_path)
        except OSError as error:
            raise JudgeError(
                f"cannot load a sequence-classification model from {name_or_path!r}: {error}"
            ) from error
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        if self._model.config.pad_token_id is None:
            # Models that pool the last non-pad token (GPT-2 heads) need to know the pad id.
            self._model.config.pad_token_id = self._tokenizer.pad_token_id
        self._tokenizer.truncation_side = "left"
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model.to(self._device).eval()
        self._torch = torch
        self._batch_size = batch_size
        limit = getattr(self._model.config, "max_position_embeddings", None) or 512
        self._max_length = min(max_length or limit, limit, self._tokenizer.model_max_length)
        self.name_or_path = name_or_path

    # Reward models are trained on (question, answer) text pairs, which their tokenizer joins with its
    # own separator; a classifier reads one text.
    pair_input = False

    def _logits(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        torch = self._torch
        out = []
        for start in range(0, len(texts), self._batch_size):
            stop = start + self._batch_size
            batch = self._tokenizer(
                texts[start:stop],
                pairs[start:stop] if pairs is not None else None,
                padding=True,
                truncation=True,
                max_length=self._max_length,
                return_tensors="pt",
            ).to(self._device)
            with torch.no_grad():
                out.append(self._model(**batch).logits.float().cpu().numpy().astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, self._model.config.num_labels))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if self.pair_input:
            return self._scores_from_logits(self._logits(list(prompts), list(responses)))
        return self._scores_from_logits(self._logits([p + r for p, r in zip(prompts, responses)]))

    def _scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """[N, labels] logits -> [N] scores; each judge (reward model, classifier) says how."""
        raise TypeError(f"{type(self).__name__} does not say how its logits become scores")


class RewardModelJudge(_SequenceClassifier):
    """The reward model's single logit for the pair (prompt, response); the higher score wins."""

    pair_input = True

    def __init__(self, name_or_path: str, **kwargs):
        super().__init__(name_or_path, **kwargs)
        if self._model.config.num_labels != 1:
            raise JudgeError(
                f"{name_or_path} has {self._model.config.num_labels} outputs; a reward model has one "
                "(use the classifier judge for a text classifier)"
            )
        self.name = f"reward_model:{name_or_path}"

    def _scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        return logits[:, 0]


class ClassifierJudge(_SequenceClassifier):
    """p(positive class | text) of a text classifier, in [0, 1]."""

    def __init__(self, name_or_path: str, *, positive_label: int | None = None, **kwargs):
        super().__init__(name_or_path, **kwargs)
        config = self._model.config
        if config.num_labels < 2:
            raise JudgeError(f"{name_or_path} has one output: a reward model, not a classifier")
        self.positive_index = (
            positive_label if positive_label is not None else _positive_index(config, name_or_path)
        )
        self.name = f"classifier:{name_or_path}"

    def _scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return probs[:, self.positive_index]
