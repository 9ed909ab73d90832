"""`stage="reward_model"` through the trainer on the 8 fake CPU devices: Bradley-Terry on a learnable task
reaches a high eval accuracy, the export loads in transformers as a sequence classifier with the same
scores, and misconfigurations fail at start-up naming the field."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from dpo_jax.config.defaults import base_config
from dpo_jax.models.reward import from_hf_reward_model, sequence_scores
from dpo_jax.synthetic.data import prepared_from_arrays
from dpo_jax.training import run_training
from dpo_jax.training.checks import validate_config

GOOD = 3  # the chosen response holds more of this token than the rejected one


def pairs(num, seed):
    rng = np.random.default_rng(seed)
    prompts = rng.integers(1, 7, (num, 2))
    chosen, rejected = rng.integers(1, 7, (num, 3)), rng.integers(1, 7, (num, 3))
    chosen[:, 0] = GOOD
    rejected = np.where(rejected == GOOD, 4, rejected)
    return prompts, np.stack([chosen, rejected], axis=1)


def config(**changes):
    c = base_config()
    c.stage, c.loss = "reward_model", "bradley_terry"
    c.model.name_or_path = "random"
    c.model.random_init_config = ml_collections.ConfigDict(
        dict(model_type="gpt2", n_layer=1, n_embd=16, n_head=2, n_positions=8, vocab_size=8, eos_token_id=7)
    )
    c.model.dtype = "float32"
    c.optimizer, c.learning_rate, c.warmup_steps = "adamw", 1e-2, 0
    c.global_batch_size, c.num_train_steps = 16, 40
    c.eval_every_examples = 10**9
    c.log_every_steps = c.checkpoint_every_steps = 20
    c.tensorboard = c.progress_bar = False
    c.update(changes)
    return c


def test_bradley_terry_reward_model_learns_and_exports(tmp_path):
    data = prepared_from_arrays("dpo", pairs(256, 0), pairs(64, 1))
    result = run_training(config(), str(tmp_path), data)
    assert result.eval_metrics["rewards/accuracies"] > 0.9
    assert result.eval_metrics["loss"] < 0.4 and not any(k.startswith("logps/") for k in result.eval_metrics)

    prompts, responses = pairs(4, 2)
    ids = np.concatenate([prompts, responses[:, 0]], axis=1)
    model, params = from_hf_reward_model(str(tmp_path / "export"))
    ours = np.asarray(sequence_scores(model.apply({"params": params}, jnp.asarray(ids)), jnp.ones(ids.shape)))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "export")).eval()
    assert hf.config.pad_token_id == 0  # the data's pad id, which no scored token equals here
    with torch.no_grad():
        theirs = hf(torch.tensor(ids, dtype=torch.long)).logits[:, 0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(loss="dpo"), "a reward model trains with one of"),
        (dict(reference_free=True), "policy settings"),
    ],
)
def test_misconfigured_reward_model_stage_names_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        validate_config(config(**changes))
