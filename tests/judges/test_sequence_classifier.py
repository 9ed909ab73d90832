"""The reward_model and classifier judges on tiny random GPT-2 sequence classifiers saved by the test."""

import builtins

import numpy as np
import pytest
import torch
import transformers

from dpo_jax.judges import ClassifierJudge, Comparison, JudgeError, RewardModelJudge, make_judge
from tests.judges.tiny_classifiers import save_tiny_classifier, save_tiny_roberta_classifier

PROMPTS = ["The film was", "I expected", "Honestly, the acting"]
RESPONSES = [" a joy from start to end.", " nothing", " wooden and the plot was thin, sadly."]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifiers")
    return {
        "classifier": save_tiny_classifier(root / "classifier", num_labels=2),
        "reward_model": save_tiny_classifier(root / "reward", num_labels=1, seed=1),
        "roberta": save_tiny_roberta_classifier(root / "roberta"),
    }


def reference_logits(path, text, pair=None):
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return model(**tokenizer(text, pair, return_tensors="pt")).logits[0].double().numpy()


def test_classifier_scores_are_positive_probabilities(model_dirs):
    judge = make_judge("classifier", name_or_path=model_dirs["classifier"], batch_size=2)
    assert isinstance(judge, ClassifierJudge) and judge.positive_index == 1
    scores = judge.score(PROMPTS, RESPONSES)  # batches of 2 with padding
    for prompt, response, score in zip(PROMPTS, RESPONSES, scores):
        logits = reference_logits(model_dirs["classifier"], prompt + response)
        assert score == pytest.approx(np.exp(logits[1]) / np.exp(logits).sum(), abs=1e-5)
    assert len(set(np.round(scores, 6))) == 3  # padding did not make the rows alike


def test_roberta_classifier_runs_in_jax_with_the_probabilities_of_transformers(model_dirs, caplog):
    with caplog.at_level("INFO", logger="dpo_jax.judges.sequence_classifier"):
        judge = ClassifierJudge(model_dirs["roberta"], batch_size=2)
    assert judge._kind == "roberta" and not hasattr(judge, "_model")  # no torch model behind it
    assert "PyTorch" not in caplog.text
    scores = judge.score(PROMPTS, RESPONSES)  # batches of 2, right-padded to a bucketed length
    for prompt, response, score in zip(PROMPTS, RESPONSES, scores):
        logits = reference_logits(model_dirs["roberta"], prompt + response)
        # softmax of logits within ~1e-5 of each other in fp32 (logit parity is 1e-4 at most)
        assert score == pytest.approx(np.exp(logits[1]) / np.exp(logits).sum(), abs=1e-5)
    assert np.ptp(np.log(scores) - np.log1p(-scores)) > 0.1  # the texts' log-odds differ

    # The label whose logit is the reward (PPO-GT): by name, and as a raw logit.
    negative = ClassifierJudge(model_dirs["roberta"], positive_label="NEGATIVE", output="logit")
    expected = [reference_logits(model_dirs["roberta"], p + r)[0] for p, r in zip(PROMPTS, RESPONSES)]
    np.testing.assert_allclose(negative.score(PROMPTS, RESPONSES), expected, rtol=0, atol=1e-4)
    with pytest.raises(JudgeError, match="no label 'HAPPY'"):
        ClassifierJudge(model_dirs["roberta"], positive_label="HAPPY")


def test_other_architectures_say_they_run_in_torch_on_the_host(model_dirs, caplog):
    with caplog.at_level("INFO", logger="dpo_jax.judges.sequence_classifier"):
        ClassifierJudge(model_dirs["classifier"])  # a GPT-2 with two labels: no Flax model of ours
    assert "runs in PyTorch on the host" in caplog.text


def test_reward_model_judge_prefers_the_higher_score(model_dirs):
    judge = RewardModelJudge(model_dirs["reward_model"])
    scores = judge.score(PROMPTS, RESPONSES)
    for prompt, response, score in zip(PROMPTS, RESPONSES, scores):
        # The reward model reads (prompt, response) as a text pair, one example at a time here.
        assert score == pytest.approx(
            reference_logits(model_dirs["reward_model"], prompt, response)[0], abs=1e-5
        )
    verdicts = judge.judge(
        [Comparison(PROMPTS[0], RESPONSES[0], RESPONSES[2]), Comparison("x", "same", "same")]
    )
    first = scores[0] > judge.score([PROMPTS[0]], [RESPONSES[2]])[0]
    assert verdicts[0].choice == ("A" if first else "B")
    assert verdicts[1].choice == "tie"


def test_wrong_model_kinds_and_missing_models_are_clear(model_dirs, tmp_path):
    with pytest.raises(JudgeError, match="has 2 outputs; a reward model has one"):
        RewardModelJudge(model_dirs["classifier"])
    with pytest.raises(JudgeError, match="one output: a reward model, not a classifier"):
        ClassifierJudge(model_dirs["reward_model"])
    with pytest.raises(JudgeError, match="cannot load a sequence-classification model"):
        ClassifierJudge(str(tmp_path / "nothing"))


def test_missing_torch_is_explained(model_dirs, monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    # What transformers concludes on a machine without torch (it imports torch for configs otherwise).
    monkeypatch.setattr("transformers.configuration_utils.is_torch_available", lambda: False)
    with pytest.raises(JudgeError, match=r"pip install 'dpo_jax\[torch\]'"):
        ClassifierJudge(model_dirs["classifier"])
