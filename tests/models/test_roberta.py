"""The Flax RoBERTa sequence classifier against transformers' on a tiny random model: logits within 1e-4
in fp32 for right- and left-padded batches, loaded by `from_hf` from safetensors and from a .bin file."""

import jax
import numpy as np
import pytest
import torch

from dpo_jax.models import from_hf
from dpo_jax.models.roberta import RobertaForSequenceClassification, roberta_position_ids
from tests.models.conftest import VOCAB, make_hf_roberta

PAD = 1


def padded_batch():
    """Rows of lengths 12, 7 (right-padded) and 9 (left-padded), starting with <s> (0) as RoBERTa's do."""
    rng = np.random.RandomState(0)
    ids = rng.randint(3, VOCAB, (3, 12)).astype(np.int64)
    ids[:, 0] = 0
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, :3] = 0
    ids[2, 3] = 0
    return np.where(mask > 0, ids, PAD), mask


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_logits_match_transformers(tmp_path, weights):
    hf = make_hf_roberta()
    if weights == "safetensors":
        hf.save_pretrained(tmp_path)
    else:  # the legacy format some hub checkpoints still ship
        hf.config.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    model, params = from_hf(str(tmp_path))
    assert isinstance(model, RobertaForSequenceClassification)
    ids, mask = padded_batch()
    ours = np.asarray(jax.jit(model.apply)({"params": params}, ids.astype(np.int32), mask.astype(np.int32)))
    with torch.no_grad():
        theirs = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    # fp32 through 2 layers of width <= 64: rounding errors of a few 1e-6 on O(1) logits; 1e-4 is the bound.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    assert np.ptp(theirs[:, 1] - theirs[:, 0]) > 1e-2  # the rows are told apart


def test_positions_skip_pads_and_start_after_the_pad_id():
    ids = np.array([[0, 5, 6, PAD, PAD], [PAD, PAD, 0, 5, 6]])
    np.testing.assert_array_equal(
        np.asarray(roberta_position_ids(ids, PAD)), [[2, 3, 4, 1, 1], [1, 1, 2, 3, 4]]
    )


def test_a_missing_tensor_is_named(tmp_path):
    hf = make_hf_roberta()
    state = {k: v for k, v in hf.state_dict().items() if "classifier.out_proj.bias" not in k}
    hf.config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="missing tensor 'classifier.out_proj.bias'"):
        from_hf(str(tmp_path))
