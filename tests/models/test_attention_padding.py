"""The padding contract (dpo_jax.models.attention): every backend gives the XLA path's outputs at the
real positions for right, left and both-side padded rows (and holes), through the attention alone and
through whole models; cuDNN's exact call runs on XLA's reference path here (`route_cudnn_to_xla`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.models import ModelConfig, RightPadded, build_model
from dpo_jax.models import attention as attention_module
from dpo_jax.models.attention import _cudnn_attention, causal_attention
from tests.synthetic.tiny_models import random_params
from tests.tolerances import f32_bound

LENGTH = 20
# One row per layout, so one forward covers them all (a row's padding changes no other row).
LAYOUTS = {
    "full": (0, LENGTH),
    "right padded": (0, 13),
    "left padded": (6, LENGTH),
    "both sides": (4, 15),
}


def padding_mask(layouts=LAYOUTS, length=LENGTH):
    """[B, L] int32: row b real on [start, end) of its layout."""
    positions = np.arange(length)[None]
    starts, ends = (np.array([span[i] for span in layouts.values()])[:, None] for i in (0, 1))
    return ((positions >= starts) & (positions < ends)).astype(np.int32)


def route_cudnn_to_xla(monkeypatch, platform=None):
    """The cuDNN backend's very call (lengths, views, causal flag) on XLA's reference implementation;
    `platform="gpu"` also makes `auto` resolve as it does in a program traced for a GPU."""
    monkeypatch.setattr(
        attention_module, "_cudnn_attention", functools.partial(_cudnn_attention, implementation="xla")
    )
    if platform:
        monkeypatch.setattr(attention_module, "target_platform", lambda: platform)


def float_tolerance(dtype, magnitude, terms, layers=1):
    """A bound on |a - b| for two paths that sum the same `terms` softmax terms in different orders (real
    keys moved together), accumulating in float32 (`f32_bound`) per layer; in bf16 each layer's
    attention output may also round the other way (one ulp, eps(bf16) relative)."""
    rounding = 0.0 if jnp.dtype(dtype) == jnp.float32 else float(jnp.finfo(dtype).eps) * float(magnitude)
    return layers * (f32_bound(magnitude, terms) + rounding)


@pytest.fixture(scope="module")
def qkv():
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    return tuple(jax.random.normal(key, (len(LAYOUTS), LENGTH, 2, 16), jnp.float32) for key in keys)


@functools.partial(jax.jit, static_argnums=0)
def _outputs_and_grads(attention, q, k, v, mask):
    real = jnp.asarray(mask, bool)[:, :, None, None]

    def loss(q, k, v):
        out = attention(q, k, v, mask)
        return jnp.sum(jnp.where(real, jnp.sin(out), 0.0)), jnp.where(real, out, 0.0)

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


def _xla(q, k, v, mask):
    return causal_attention(q, k, v, mask, scale=0.25, implementation="xla")


def _cudnn_on_xla(q, k, v, mask):
    return _cudnn_attention(q, k, v, mask, scale=0.25, implementation="xla")


def _splash(q, k, v, mask):
    return causal_attention(q, k, v, mask, scale=0.25, implementation="splash")


@pytest.mark.parametrize("attention", [_cudnn_on_xla, _splash], ids=["cudnn call on xla", "splash"])
def test_every_padding_layout_equals_xla_in_values_and_gradients(attention, qkv):
    """Right, left, both-side padding and a hole in the middle; gradients reach q, k, v of the real
    positions only (a padding key is never seen by a real query)."""
    mask = padding_mask()
    mask[0, 7:9] = 0  # a hole: the full row loses two tokens in its middle
    want_out, want_grads = _outputs_and_grads(_xla, *qkv, jnp.asarray(mask))
    got_out, got_grads = _outputs_and_grads(attention, *qkv, jnp.asarray(mask))
    tol = float_tolerance(jnp.float32, 4.0, LENGTH)  # |out| <= max|v| < 4.5 sigma; |grads| likewise
    names = ["full with a hole"] + list(LAYOUTS)[1:]
    for row, name in enumerate(names):
        np.testing.assert_allclose(got_out[row], want_out[row], atol=tol, err_msg=name)
        for got, want in zip(got_grads, want_grads):
            np.testing.assert_allclose(got[row], want[row], atol=tol, err_msg=name)


def test_cudnn_takes_a_right_padded_mask_as_lengths_and_a_plain_one_through_the_view(monkeypatch, qkv):
    """`RightPadded` (the loader's batches) goes to cuDNN as lengths alone, no gather in the program;
    a plain mask, which may be padded anywhere, goes through the view (gathers); both equal XLA."""
    route_cudnn_to_xla(monkeypatch)
    mask = jnp.asarray(padding_mask({name: LAYOUTS[name] for name in ("full", "right padded")}))
    q, k, v = (x[:2] for x in qkv)
    want, _ = _outputs_and_grads(_xla, q, k, v, mask)
    real = np.asarray(mask, bool)[:, :, None, None]
    tol = float_tolerance(jnp.float32, 4.0, LENGTH)
    for declare, gathers in ((True, False), (False, True)):

        def run(q, k, v, m, declare=declare):
            m = RightPadded(m) if declare else m
            return causal_attention(q, k, v, m, scale=0.25, implementation="cudnn")

        run = jax.jit(run)
        assert ("gather" in run.lower(q, k, v, mask).as_text()) == gathers
        np.testing.assert_allclose(np.where(real, run(q, k, v, mask), 0.0), want, atol=tol)


def _tiny_model(arch, dtype, attention):
    # GPT-J: rotary on 8 of each head's 16 features, its own head (with a bias), no attention biases.
    gptj = dict(gptj_rotary_dim=8, tie_word_embeddings=False, attention_bias=False) if arch == "gptj" else {}
    config = ModelConfig(arch, 64, 32, 2, 2, 64, 32, dtype=dtype, attention=attention, **gptj)
    return build_model(config)


@functools.cache
def _tiny_params(arch):
    return random_params(_tiny_model(arch, "float32", "xla"), seed=4, std=0.3)


def _model_logits(arch, dtype, attention, ids, mask):
    model = _tiny_model(arch, dtype, attention)
    logits = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m))(
        _tiny_params(arch), ids, mask
    )
    return np.where(np.asarray(mask, bool)[:, :, None], np.asarray(logits, np.float32), 0.0)


CUDNN_ROUTES = {"cudnn": None, "auto on a GPU": "gpu"}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "gptj"])
def test_models_give_the_same_logits_on_every_backend_and_padding(monkeypatch, arch, dtype):
    """A 2-layer GPT-2, GPT-NeoX and GPT-J: logits at the real positions of right, left and both-side padded
    rows are XLA's on cuDNN (routed to XLA; `attention="cudnn"` and `"auto"` traced for a GPU) and on
    splash (interpret mode). Before the padding contract cuDNN read a left-padded row's real tokens
    as its first ones: logits off by tenths."""
    ids = jnp.asarray(np.random.default_rng(5).integers(0, 64, (len(LAYOUTS), LENGTH)), jnp.int32)
    mask = jnp.asarray(padding_mask())
    want = _model_logits(arch, dtype, "xla", ids, mask)
    got = {"splash": _model_logits(arch, dtype, "splash", ids, mask)}
    for name, platform in CUDNN_ROUTES.items():
        with monkeypatch.context() as patch:
            route_cudnn_to_xla(patch, platform)
            if platform is not None:
                assert attention_module.resolve_implementation(
                    "auto", jnp.zeros((1, 1, 2, 16), dtype), decode=False, pairwise=False
                ) == ("cudnn" if dtype == "bfloat16" else "xla")
            got[name] = _model_logits(arch, dtype, "cudnn" if platform is None else "auto", ids, mask)
    tol = float_tolerance(dtype, np.abs(want).max(), LENGTH, layers=2)
    for name, logits in got.items():
        for row, layout in enumerate(LAYOUTS):
            np.testing.assert_allclose(logits[row], want[row], atol=tol, err_msg=f"{name}, {layout}")


def prompts_and_responses(rows, prompt_length, response_length, vocab, seed=6):
    """(prompt_ids, prompt_mask, response_ids, response_mask) [rows, P] / [rows, T]: prompts left padded,
    responses right padded, as the sampler returns them; [prompt | response] is padded on both sides."""
    rng = np.random.default_rng(seed)
    prompt_lengths = 1 + np.arange(rows) % prompt_length
    response_lengths = 1 + (np.arange(rows) * 3) % response_length
    prompt_mask = (np.arange(prompt_length)[None] >= prompt_length - prompt_lengths[:, None]).astype(np.int32)
    response_mask = (np.arange(response_length)[None] < response_lengths[:, None]).astype(np.int32)
    prompt_ids = rng.integers(1, vocab, prompt_mask.shape) * prompt_mask
    response_ids = rng.integers(1, vocab, response_mask.shape) * response_mask
    return prompt_ids.astype(np.int32), prompt_mask, response_ids.astype(np.int32), response_mask
