"""The scalar-head (reward / value) model: the score is read where transformers reads it, the export loads
in transformers as a sequence classifier with the same scores, and it loads back bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from dpo_jax.models import from_hf
from dpo_jax.models.reward import (
    ScalarHeadModel,
    from_hf_reward_model,
    scalar_head_params,
    sequence_scores,
    to_hf_reward_model,
)
from tests.models.conftest import VOCAB, make_hf_model

PAD = VOCAB - 1  # a pad id that no real sequence below contains


def _right_padded_batch():
    rng = np.random.RandomState(3)
    ids = rng.randint(1, VOCAB - 1, (3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 6:] = 0
    mask[2, 4:] = 0
    return np.where(mask > 0, ids, PAD), mask


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "gptj"])
def test_export_loads_in_transformers_with_the_same_scores(tmp_path, arch):
    make_hf_model(arch).save_pretrained(tmp_path / "lm")
    lm, lm_params = from_hf(str(tmp_path / "lm"))
    model = ScalarHeadModel(lm.config)
    params = scalar_head_params(lm_params, jax.random.PRNGKey(0), hidden_size=lm.config.hidden_size)
    params["score"] = params["score"] * 50  # a head large enough that the scores differ visibly
    ids, mask = _right_padded_batch()
    values = model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
    ours = np.asarray(sequence_scores(values, jnp.asarray(mask)))
    # The score is the value at the last real token, not at the last column.
    np.testing.assert_allclose(ours, np.asarray(values)[np.arange(3), mask.sum(1) - 1])

    to_hf_reward_model(model, params, str(tmp_path / "rm"), pad_token_id=PAD)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm")).eval()
    assert type(hf).__name__.endswith("ForSequenceClassification")
    with torch.no_grad():
        theirs = (
            hf(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits[:, 0].numpy()
        )
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)

    reloaded, params_again = from_hf_reward_model(str(tmp_path / "rm"))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_again)):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b))
    again = reloaded.apply({"params": params_again}, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(values))


def test_pad_equal_to_eos_is_refused_with_the_reason(tmp_path):
    make_hf_model("gpt2").save_pretrained(tmp_path / "lm")
    lm, lm_params = from_hf(str(tmp_path / "lm"))
    params = scalar_head_params(lm_params, jax.random.PRNGKey(0), hidden_size=lm.config.hidden_size)
    with pytest.raises(ValueError, match="token before each trailing EOS"):
        to_hf_reward_model(ScalarHeadModel(lm.config), params, str(tmp_path / "rm"), pad_token_id=0)


def test_a_checkpoint_without_a_score_head_is_named(tmp_path):
    make_hf_model("gpt2").save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="no score.weight"):
        from_hf_reward_model(str(tmp_path / "lm"))
