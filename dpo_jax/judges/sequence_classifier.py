"""Judges that score each response with a Hugging Face sequence-classification model.

  * `RewardModelJudge`: a reward model with one output (the score is that logit), e.g. a reward model
    trained here (`stage="reward_model"`), an OpenAssistant DeBERTa reward model; the higher score wins.
  * `ClassifierJudge`: a text classifier's probability (or logit) of one label, by default its positive
    class, e.g. the DPO paper's IMDb ground-truth reward `siebert/sentiment-roberta-large-english`
    (RoBERTa-large, labels NEGATIVE / POSITIVE).

GPT-2 / GPT-NeoX reward heads and RoBERTa classifiers run as our Flax models, batched on the mesh
(`judges.scoring`), with no torch; any other architecture runs in PyTorch (`pip install
'dpo_jax[torch]'`) on the host, and says so in the log. The classifier scores the text prompt +
response (for IMDb: the review prefix and its continuation). A reward model exported by our trainer
scores prompt ids + response ids + EOS, exactly the ids it was trained on, at that EOS
(`models.reward.reward_model_input_ids`); other reward models score the text pair (prompt, response)
joined by their tokenizer as in their training (e.g. [CLS] question [SEP] answer [SEP] for DeBERTa).
Inputs longer than the model takes lose their start (the response is what is judged). Models come
from a local directory or a hub name.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import numpy as np

from dpo_jax import MissingInputError
from dpo_jax.data.tokenizer import pretrained_tokenizer
from dpo_jax.judges.base import JudgeError, ScoringJudge
from dpo_jax.judges.process_zero import from_process_zero
from dpo_jax.judges.scoring import MeshScorer, scorer_dtype
from dpo_jax.models import from_hf
from dpo_jax.models.config import ARCHITECTURES
from dpo_jax.models.hf_io import hf_num_labels, read_hf_config, resolve_checkpoint_dir
from dpo_jax.models.loading import resolve_model_path
from dpo_jax.models.reward import (
    SCORE_AT_EOS,
    export_score_position,
    from_hf_reward_model,
    reward_model_input_ids,
)

logger = logging.getLogger(__name__)

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
    labels = config["id2label"]
    matches = [index for index, label in labels.items() if _POSITIVE.match(label)]
    if len(matches) == 1:
        return matches[0]
    if len(labels) == 2:
        return 1  # the convention of binary sentiment heads without label names
    raise JudgeError(
        f"{name}: cannot tell the positive class among labels {labels}; pass positive_label explicitly"
    )


def classifier_config(directory: str) -> dict:
    """A model directory's config as a dict (`hf_io.read_hf_config`: our exports' config.json read as JSON,
    as transformers' config classes cost the process a torch import), with `id2label` keyed by output
    index and filled in as transformers names labels when config.json names none ("LABEL_0", ...)."""
    config = read_hf_config(directory)
    labels = {int(index): str(label) for index, label in (config.get("id2label") or {}).items()}
    return {**config, "id2label": labels or {index: f"LABEL_{index}" for index in range(hf_num_labels(config))}}


def flax_kind(config) -> str | None:
    """Which of our Flax models runs a Hugging Face sequence classifier: "reward" (a GPT-2 / GPT-NeoX /
    GPT-J body with one output, `models.reward`), "roberta" (`models.roberta`), or None (torch only)."""
    if config.get("model_type") in ARCHITECTURES and len(config["id2label"]) == 1:
        return "reward"
    if config.get("model_type") == "roberta":
        return "roberta"
    return None


class _SequenceClassifier(ScoringJudge):
    """Loads the model in Flax when we have its architecture (`flax_kind`) and scores on the mesh
    (`judges.scoring.MeshScorer`, the run's `mesh` and `rules`, else every device on the data axis), in
    `dtype` compute (default: bf16 on accelerators, fp32 on CPUs, `judges.scoring.scorer_dtype`);
    other architectures run in PyTorch (`device`, default cuda when torch sees one, else the CPU)."""

    def __init__(
        self,
        name_or_path: str,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        device=None,
        mesh=None,
        rules=None,
        dtype: str | None = None,
    ):
        self._dtype = dtype  # a Flax scorer's compute dtype; None: the platform's (`scorer_dtype`)

        try:
            path = resolve_model_path(name_or_path)  # a dpo_jax workdir stands for its export
            directory = resolve_checkpoint_dir(path)
            self._config = classifier_config(directory)
            # A hub snapshot of the weights holds no tokenizer files: those come by the hub name.
            self._tokenizer = pretrained_tokenizer(directory if os.path.isdir(path) else path)
        except (OSError, ValueError, MissingInputError) as error:
            raise JudgeError(
                f"cannot load a sequence-classification model from {name_or_path!r}: {error}"
            ) from error
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._tokenizer.truncation_side = "left"
        self._batch_size = batch_size
        self._kind = flax_kind(self._config)
        self._score_at = export_score_position(directory) if self._kind == "reward" else None
        if self._kind is None:
            limit = self._load_torch(directory, device)
        else:
            limit = self._load_flax(directory, mesh, rules)
        self._max_length = min(max_length or limit, limit, self._tokenizer.model_max_length)
        self.name_or_path = name_or_path

    def _load_flax(self, directory: str, mesh, rules) -> int:
        # bf16 compute on accelerators (fp32 params and heads): `judges.scoring.scorer_dtype`.
        platform = None if mesh is None else mesh.devices.flat[0].platform
        dtype = self._dtype or scorer_dtype(platform)
        if self._kind == "reward":
            model, params = from_hf_reward_model(directory, dtype=dtype)
        else:
            model, params = from_hf(directory, dtype=dtype)
        self._scorer = MeshScorer(model, params, mesh=mesh, rules=rules, batch_size=self._batch_size)
        return self._scorer.max_length

    def _load_torch(self, directory: str, device) -> int:
        torch = _import_torch()
        from transformers import AutoModelForSequenceClassification

        logger.info(
            "%s (%s) has no Flax model in dpo_jax: it runs in PyTorch on the host CPU (or cuda when torch "
            "sees one), not on the mesh",
            directory,
            self._config.get("model_type"),
        )
        try:
            self._model = AutoModelForSequenceClassification.from_pretrained(directory)
        except OSError as error:
            raise JudgeError(
                f"cannot load a sequence-classification model from {directory!r}: {error}"
            ) from error
        if self._model.config.pad_token_id is None:
            # Models that pool the last non-pad token (GPT-2 heads) need to know the pad id.
            self._model.config.pad_token_id = self._tokenizer.pad_token_id
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model.to(self._device).eval()
        self._torch = torch
        return getattr(self._model.config, "max_position_embeddings", None) or 512

    @property
    def num_labels(self) -> int:
        return len(self._config["id2label"])

    # Reward models are trained on (question, answer) text pairs, which their tokenizer joins with its
    # own separator; a classifier reads one text.
    pair_input = False

    def _logits(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        if self._kind is None:  # host compute: process 0's logits, bit for bit, on every process
            shape = (len(texts), self.num_labels)
            return from_process_zero(lambda: self._torch_logits(texts, pairs), shape, np.float64)
        if self._score_at == SCORE_AT_EOS:
            # A reward model of ours: the ids its trainer scored, read at their EOS.
            sequences = reward_model_input_ids(self._tokenizer, texts, pairs, max_length=self._max_length)
        else:
            sequences = self._tokenizer(
                texts, pairs, truncation=True, max_length=self._max_length, verbose=False
            )["input_ids"]
        pad_id = self._config.get("pad_token_id")
        pad_id = self._tokenizer.pad_token_id if pad_id is None else pad_id
        return self._scorer.logits(sequences, pad_id=pad_id).astype(np.float64)

    def _torch_logits(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
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
        return np.concatenate(out) if out else np.zeros((0, self.num_labels))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return np.zeros((0,))
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
        if self.num_labels != 1:
            raise JudgeError(
                f"{name_or_path} has {self.num_labels} outputs; a reward model has one "
                "(use the classifier judge for a text classifier)"
            )
        self.name = f"reward_model:{name_or_path}"

    def _scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        return logits[:, 0]


class ClassifierJudge(_SequenceClassifier):
    """p(label | text) of a text classifier, in [0, 1] (`output="logit"`: that label's logit).

    The label is `positive_label`: an index or a name of `config.id2label` ("POSITIVE"); by default
    the positive class of a sentiment head. PPO-GT reads it as the reward."""

    OUTPUTS = ("probability", "logit")

    def __init__(
        self,
        name_or_path: str,
        *,
        positive_label: int | str | None = None,
        output: str = "probability",
        **kwargs,
    ):
        if output not in self.OUTPUTS:
            raise JudgeError(f"output={output!r}; expected one of {self.OUTPUTS}")
        super().__init__(name_or_path, **kwargs)
        if self.num_labels < 2:
            raise JudgeError(f"{name_or_path} has one output: a reward model, not a classifier")
        self.positive_index = label_index(self._config, positive_label, name_or_path)
        self.output = output
        self.name = f"classifier:{name_or_path}"

    def _scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        if self.output == "logit":
            return logits[:, self.positive_index]
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return probs[:, self.positive_index]


def label_index(config, label: int | str | None, name: str) -> int:
    """The output index of `label` (an index, or a name of config.id2label; None: the positive class)."""
    if label is None:
        return _positive_index(config, name)
    names = {label: index for index, label in config["id2label"].items()}
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        if label not in names:
            raise JudgeError(f"{name}: no label {label!r}; its labels are {sorted(names)}")
        return names[label]
    index = int(label)
    if not 0 <= index < len(config["id2label"]):
        raise JudgeError(f"{name}: label index {index} is out of range for {len(config['id2label'])} labels")
    return index
