"""PPO's reward from `config.ppo.reward_model`: a Hugging Face sequence classifier (PPO-GT) reads the
decoded texts, and its reward is p(reward_label | prompt + response) as transformers computes it; our
reward heads keep scoring token ids; a missing or unusable model is one `error:` line."""

import numpy as np
import pytest
import torch
import transformers

from dpo_jax import MissingInputError, UserError
from dpo_jax.config.defaults import base_config
from dpo_jax.data import load_tokenizer
from dpo_jax.ppo.rewards import CLASSIFIER, TOKEN_IDS, load_reward_model_fn, reward_model_source
from dpo_jax.sharding import mesh_and_rules
from tests.judges.tiny_classifiers import save_tiny_classifier
from tests.models.conftest import make_hf_roberta
from tests.train_helpers import run_main

PROMPTS = ["The film was", "I expected", "Honestly, the acting"]
RESPONSES = [" a joy from start to end.", " nothing", " wooden and the plot was thin, sadly."]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tokenizer):
    """A tiny random RobertaForSequenceClassification (NEGATIVE / POSITIVE) with a tokenizer of its own."""
    path = tmp_path_factory.mktemp("roberta")
    make_hf_roberta(vocab_size=len(tokenizer), seed=3).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def config_for(reward_model, label=""):
    config = base_config()
    config.tokenizer = "tiny"  # the policy's tokenizer
    config.mesh_shape = (-1, 1, 1)
    config.global_batch_size = 8
    config.ppo.reward_model = reward_model
    config.ppo.reward_label = label
    return config


def rollout_rows(tokenizer):
    """Left-padded prompt ids and right-padded response ids (ending in EOS), as a rollout holds them."""
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts, responses = (
        [encode(p) for p in PROMPTS],
        [encode(r) + [tokenizer.eos_token_id] for r in RESPONSES],
    )
    width_p, width_r = max(map(len, prompts)) + 1, max(map(len, responses)) + 2
    prompt_ids, prompt_mask = np.zeros((3, width_p), np.int32), np.zeros((3, width_p), np.int32)
    response_ids, response_mask = np.zeros((3, width_r), np.int32), np.zeros((3, width_r), np.int32)
    for row, (p, r) in enumerate(zip(prompts, responses)):
        prompt_ids[row, width_p - len(p) :], prompt_mask[row, width_p - len(p) :] = p, 1
        response_ids[row, : len(r)], response_mask[row, : len(r)] = r, 1
    return prompt_ids, prompt_mask, response_ids, response_mask


def transformers_probabilities(path, texts):
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = [model(**tokenizer(text, return_tensors="pt")).logits[0].double() for text in texts]
    return torch.softmax(torch.stack(logits), dim=-1).numpy()


@pytest.mark.parametrize("label,column", [("POSITIVE", 1), ("", 1), ("NEGATIVE", 0), ("0", 0)])
def test_a_classifier_reward_is_its_label_probability_on_the_decoded_texts(
    classifier_dir, tokenizer, label, column
):
    config = config_for(classifier_dir, label)
    assert reward_model_source(config).kind == CLASSIFIER
    mesh, rules = mesh_and_rules(config.mesh_shape, config.logical_axis_rules)
    rows = rollout_rows(tokenizer)
    rewards = load_reward_model_fn(config, mesh, rules)(*rows)
    assert [
        tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in RESPONSES
    ] == RESPONSES
    expected = transformers_probabilities(classifier_dir, [p + r for p, r in zip(PROMPTS, RESPONSES)])[
        :, column
    ]
    assert rewards.dtype == np.float32 and rewards.shape == (3,)
    # float32 forwards of a 2-layer model over <= 64 tokens against float64 softmax: ~1e-6 in probability.
    np.testing.assert_allclose(rewards, expected, atol=1e-5)
    assert len(set(np.round(rewards, 5))) == 3  # each row scored on its own text, padding ignored


def test_our_reward_heads_keep_scoring_token_ids(tmp_path):
    path = save_tiny_classifier(tmp_path / "rm", num_labels=1)
    assert reward_model_source(config_for(path)).kind == TOKEN_IDS
    with pytest.raises(UserError, match="config.ppo.reward_label='POSITIVE'.*one output"):
        reward_model_source(config_for(path, "POSITIVE"))


def test_unusable_reward_models_name_the_field(tmp_path, classifier_dir):
    with pytest.raises(MissingInputError, match="config.ppo.reward_model: .*/no/such/classifier"):
        reward_model_source(config_for(str(tmp_path / "no" / "such" / "classifier")))
    with pytest.raises(UserError, match="config.ppo.reward_model is empty"):
        reward_model_source(config_for(""))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.ppo.reward_model=.*unreadable"):
        reward_model_source(config_for(str(tmp_path / "broken")))
    language_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2))
    language_model.save_pretrained(tmp_path / "lm")  # before, a language model became a random reward head
    with pytest.raises(UserError, match="not a sequence-classification model"):
        reward_model_source(config_for(str(tmp_path / "lm")))
    config = config_for(classifier_dir, "NEUTRAL")
    mesh, rules = mesh_and_rules(config.mesh_shape, config.logical_axis_rules)
    with pytest.raises(UserError, match="no label 'NEUTRAL'"):
        load_reward_model_fn(config, mesh, rules)


def test_a_missing_reward_model_on_the_command_line_is_one_error_line(tmp_path):
    result = run_main(
        tmp_path / "run", "--config.stage=ppo", "--config.ppo.reward_model=/no/such/classifier", timeout=300
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == "error: config.ppo.reward_model: model directory /no/such/classifier does not exist"
