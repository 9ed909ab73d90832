"""The vocabulary is padded to a multiple of 128 inside the model and nowhere else.

VOCAB = 96 in the tiny HF models pads to 128: the embedding (and Pythia's separate head) hold 128
rows, the padding is zero on import and never exported, and the logits have the real 96 columns.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from dpo_jax.models import from_hf, to_hf
from dpo_jax.models.config import from_hf_config
from dpo_jax.models.presets import preset
from tests.models.conftest import VOCAB, hf_logits, make_hf_model

PADDED = 128


def test_padded_sizes():
    assert from_hf_config(preset("gpt2")).padded_vocab_size == 50304  # 50257 -> 50304
    assert from_hf_config(preset("pythia-2.8b")).padded_vocab_size == 50304  # already a multiple
    assert from_hf_config({**preset("tiny"), "vocab_size": 96}).padded_vocab_size == PADDED


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "gptj"])
def test_padding_stays_inside_the_model(tmp_path, arch):
    hf = make_hf_model(arch)
    hf.save_pretrained(tmp_path / "hf")
    model, params = from_hf(str(tmp_path / "hf"))
    heads = {
        "gpt2": [("wte", "embedding", 0)],
        "gpt_neox": [("embed_in", "embedding", 0), ("embed_out", "kernel", 1)],
        "gptj": [("wte", "embedding", 0), ("embed_out", "kernel", 1), ("embed_out", "bias", 0)],
    }
    for module, name, axis in heads[arch]:
        table = np.asarray(params[module][name])
        assert table.shape[axis] == PADDED
        assert not np.take(table, np.arange(VOCAB, PADDED), axis=axis).any()  # zero padding

    ids = np.random.RandomState(0).randint(0, VOCAB, (2, 9)).astype(np.int32)
    logits = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    assert logits.shape == (2, 9, VOCAB)
    np.testing.assert_allclose(logits, hf_logits(hf, ids), atol=1e-4, rtol=0)
    # Whatever the padded rows hold, nothing the model returns depends on them.
    noisy = jax.tree.map(lambda x: x, params)
    for module, name, axis in heads[arch]:
        table = np.array(noisy[module][name])
        index = [slice(None)] * table.ndim
        index[axis] = slice(VOCAB, PADDED)
        table[tuple(index)] = 1e3
        noisy[module][name] = table
    np.testing.assert_array_equal(np.asarray(model.apply({"params": noisy}, jnp.asarray(ids))), logits)

    to_hf(model, noisy, str(tmp_path / "export"))
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    expected = {name: tuple(t.shape) for name, t in hf.state_dict().items() if name in exported}
    assert expected and all(tuple(exported[name].shape) == shape for name, shape in expected.items())
    for name, tensor in hf.state_dict().items():
        if name in exported and tensor.shape[0] == VOCAB:
            np.testing.assert_array_equal(exported[name], tensor.numpy())
