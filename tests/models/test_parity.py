"""Flax logits equal Hugging Face PyTorch logits (fp32) for every architecture setting, padded or not."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.conftest import VOCAB, hf_logits, hf_params

TOL = 1e-4


def _ids(batch, length, seed=0):
    return np.random.RandomState(seed).randint(1, VOCAB, (batch, length)).astype(np.int32)


def test_unpadded_logits_match_hf(hf_setting):
    name, hf = hf_setting
    model, params = hf_params(hf)
    ids = _ids(3, 17)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    ref = hf_logits(hf, ids)
    assert ours.shape == (3, 17, VOCAB)
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0, err_msg=name)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_real_tokens_match_unpadded(hf_setting, side):
    name, hf = hf_setting
    model, params = hf_params(hf)
    lengths = [12, 7, 3]
    width = max(lengths)
    seqs = [_ids(1, n, seed=i)[0] for i, n in enumerate(lengths)]
    ids = np.zeros((len(seqs), width), np.int32)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = s, 1
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    for i, s in enumerate(seqs):
        ref = hf_logits(hf, s[None])[0]  # the unpadded sequence on its own
        got = ours[i][mask[i].astype(bool)]
        np.testing.assert_allclose(got, ref, atol=TOL, rtol=0, err_msg=f"{name} {side} row {i}")


@pytest.mark.parametrize(
    "overrides",
    [{"scan_layers": True}, {"remat_policy": "full"}, {"scan_layers": True, "remat_policy": "dots"}],
)
def test_scan_and_remat_do_not_change_logits(overrides):
    from tests.models.conftest import make_hf_model

    hf = make_hf_model("gpt_neox", rotary_pct=0.25)
    plain_model, plain_params = hf_params(hf)
    model, params = hf_params(hf, **overrides)
    ids = jnp.asarray(_ids(2, 9))
    np.testing.assert_allclose(
        np.asarray(model.apply({"params": params}, ids)),
        np.asarray(plain_model.apply({"params": plain_params}, ids)),
        atol=1e-5,
        rtol=0,
    )


def test_bf16_compute_stays_close_to_fp32():
    from tests.models.conftest import make_hf_model

    hf = make_hf_model("gpt2")
    model, params = hf_params(hf, dtype="bfloat16")
    ids = _ids(2, 9)
    ours = model.apply({"params": params}, jnp.asarray(ids))
    assert ours.dtype == jnp.bfloat16
    # bf16 has ~3 significant digits; this bounds gross errors (a wrong cast), not rounding.
    np.testing.assert_allclose(np.asarray(ours, np.float32), hf_logits(hf, ids), atol=0.1, rtol=0)
