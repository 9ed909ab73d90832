"""Attention backends: every kernel that runs here equals the XLA path in values and gradients; the
TPU and H100 programs compile (deviceless) and contain their kernels' custom calls; "auto" picks by
the platform the program is traced for; the remat policy saves the attention and projections by name."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals  # print_saved_residuals' list, not printed
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dpo_jax.models import ModelConfig, build_model, init_params
from dpo_jax.models.attention import (
    ATTENTION_CHECKPOINT_NAME,
    RowMask,
    _cudnn_attention,
    causal_attention,
    resolve_implementation,
)
from dpo_jax.models.layers import LINEAR_CHECKPOINT_NAME
from dpo_jax.objectives.batch_loss import batch_loss, reference_logps
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, make_global_batch, make_mesh, traced_in_context
from dpo_jax.training.step import make_apply_fn
from tests import deviceless
from tests.synthetic.tiny_models import tiny_lm

BATCH, LENGTH, HEADS, HEAD_DIM = 2, 72, 2, 16
LENGTHS = np.array([LENGTH, 45])  # one full row, one right-padded row


def right_padding_mask(lengths, length):
    return (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


def numpy_attention(q, k, v, visible, scale):
    """float64 softmax attention; visible [B, Lq, Lk] bool (causality included by the caller)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    scores = np.where(visible[:, None], scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


@pytest.fixture(scope="module")
def qkv():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    return tuple(jax.random.normal(key, (BATCH, LENGTH, HEADS, HEAD_DIM), jnp.float32) for key in keys)


def value_and_grads(implementation, q, k, v, mask):
    """Loss over the real query positions only (padding queries are never read), and its gradients."""
    real = jnp.asarray(mask, bool)[:, :, None, None]

    def loss(q, k, v):
        out = causal_attention(q, k, v, mask, scale=HEAD_DIM**-0.5, implementation=implementation)
        return jnp.sum(jnp.where(real, jnp.sin(out), 0.0)), out

    (value, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return value, jnp.where(real, out, 0.0), grads


def test_xla_path_matches_float64_reference(qkv):
    mask = right_padding_mask(LENGTHS, LENGTH)
    _, out, _ = value_and_grads("xla", *qkv, mask)
    causal = np.tril(np.ones((LENGTH, LENGTH), bool))
    visible = causal[None] & mask.astype(bool)[:, None, :]
    want = numpy_attention(*qkv, visible | np.eye(LENGTH, dtype=bool)[None], HEAD_DIM**-0.5)
    np.testing.assert_allclose(out, np.where(mask[:, :, None, None], want, 0.0), atol=2e-6)


def test_splash_in_interpret_mode_equals_xla_values_and_gradients(qkv):
    mask = right_padding_mask(LENGTHS, LENGTH)
    want_value, want_out, want_grads = value_and_grads("xla", *qkv, mask)
    got_value, got_out, got_grads = value_and_grads("splash", *qkv, mask)
    np.testing.assert_allclose(got_out, want_out, atol=2e-6)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-6)
    for got, want in zip(got_grads, want_grads):
        np.testing.assert_allclose(got, want, atol=5e-6)


def test_pairwise_mask_applies_causality_on_top(qkv):
    """A [B, L, L] mask: two segments in one row, each seeing only itself (packed rows)."""
    q, k, v = (x[:, :8] for x in qkv)
    segments = np.array([[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 1, 2, 2, 2]])
    pairwise = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
    out = causal_attention(q, k, v, jnp.asarray(pairwise), scale=0.5, implementation="splash")
    visible = pairwise & np.tril(np.ones((8, 8), bool))[None]
    want = numpy_attention(q, k, v, visible | np.eye(8, dtype=bool)[None], 0.5)
    np.testing.assert_allclose(out, want, atol=2e-6)
    # The [B, L] padding mask is the pairwise mask that lets every query see every real key.
    padding = right_padding_mask([8, 5], 8)
    as_pairwise = np.broadcast_to(padding[:, None, :], (2, 8, 8))
    np.testing.assert_allclose(
        causal_attention(q, k, v, jnp.asarray(padding), scale=0.5),
        causal_attention(q, k, v, jnp.asarray(as_pairwise), scale=0.5),
        atol=1e-7,
    )


def test_bad_mask_shapes_and_names_fail_clearly(qkv):
    q, k, v = qkv
    with pytest.raises(ValueError, match="expected"):
        causal_attention(q, k, v, jnp.ones((BATCH, LENGTH + 1)), scale=1.0)
    with pytest.raises(ValueError, match="pairwise"):
        causal_attention(q, k, v, jnp.ones((BATCH, LENGTH, LENGTH + 1)), scale=1.0)
    with pytest.raises(ValueError, match="attention 'flash'"):
        causal_attention(q, k, v, None, scale=1.0, implementation="flash")
    with pytest.raises(ValueError, match="head_dim"):
        causal_attention(q, k, v, None, scale=1.0, implementation="cudnn")  # fp32: not for cuDNN
    with pytest.raises(ValueError, match="attention 'flash'"):
        ModelConfig("gpt2", 64, 32, 1, 2, 64, 16, attention="flash")


def test_auto_picks_by_the_platform_traced_for():
    bf16 = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
    assert resolve_implementation("auto", bf16, decode=False, pairwise=False) == "xla"  # this CPU host
    with jax.sharding.use_abstract_mesh(deviceless.tpu_mesh().abstract_mesh):
        assert resolve_implementation("auto", bf16, decode=False, pairwise=False) == "splash"
        assert resolve_implementation("auto", bf16, decode=True, pairwise=False) == "xla"
        assert resolve_implementation("splash", bf16, decode=False, pairwise=True) == "xla"
    if deviceless.cuda_plugin_missing() is None:
        with jax.sharding.use_abstract_mesh(deviceless.h100_mesh().abstract_mesh):
            assert resolve_implementation("auto", bf16, decode=False, pairwise=False) == "cudnn"
            assert (
                resolve_implementation("auto", bf16.astype(jnp.float32), decode=False, pairwise=False)
                == "xla"
            )
            assert resolve_implementation("auto", bf16, decode=True, pairwise=False) == "xla"


def _compiled_custom_calls(mesh, head_dim):
    """Custom-call targets of the compiled forward + backward of auto attention on `mesh`."""
    data = NamedSharding(mesh, P("data"))
    shape = (mesh.size * 2, 256, 2, head_dim)
    qkv = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=data)
    mask = jax.ShapeDtypeStruct(shape[:2], jnp.int32, sharding=data)

    def loss(q, k, v, mask):
        out = causal_attention(q, k, v, mask, scale=head_dim**-0.5, implementation="auto")
        return jnp.sum(out.astype(jnp.float32))

    # conftest asks for "highest" matmul precision (fp32 passes), which Mosaic rejects for bf16
    # operands; a training run compiles at the default precision.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), jax.default_matmul_precision("default"):
        lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(qkv, qkv, qkv, mask)
    hlo = lowered.compile().as_text()
    return re.findall(r'custom_call_target="([^"]+)"', hlo)


def test_tpu_program_compiles_to_splash_kernels():
    calls = _compiled_custom_calls(deviceless.tpu_mesh(), head_dim=128)
    # Forward, dq and dkv: three Mosaic kernels, per device shard (batch over the 4 chips).
    assert calls.count("tpu_custom_call") == 3, calls


def test_h100_program_compiles_to_cudnn_flash_attention():
    reason = deviceless.cuda_plugin_missing()
    if reason:
        pytest.skip(reason)
    with deviceless.cudnn_version_from_target():
        calls = _compiled_custom_calls(deviceless.h100_mesh(), head_dim=80)  # Pythia-2.8B's head size
    assert "__cudnn$fmhaSoftmax" in calls and "__cudnn$fmhaSoftmaxBackward" in calls, calls


def test_model_with_splash_equals_xla_and_remat_saves_attention_by_name():
    """A tiny GPT-NeoX: splash (interpret) and XLA give the same logits and gradients on right-padded
    rows, and the named remat policy keeps the attention and projection outputs for the backward."""
    config = ModelConfig("gpt_neox", 128, 32, 1, 2, 64, 256, attention="xla", tie_word_embeddings=False)
    params = init_params(build_model(config), jax.random.PRNGKey(1))
    ids = jax.random.randint(jax.random.PRNGKey(2), (2, 24), 0, 128)
    mask = jnp.asarray(right_padding_mask([24, 17], 24))
    real = mask.astype(bool)[:, :, None]

    def loss_fn(model):
        def loss(params):
            logits = model.apply({"params": params}, ids, attention_mask=mask)
            return jnp.sum(jnp.where(real, jax.nn.log_softmax(logits)[..., :3], 0.0)), logits

        return loss

    results = {}
    for name, changes in [
        ("xla", {}),
        ("splash", {"attention": "splash"}),
        ("remat", {"remat_policy": "save_matmuls_attention"}),
    ]:
        loss = loss_fn(build_model(config.replace(**changes)))
        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        results[name] = (jnp.where(real, logits, 0.0), grads)
        if name == "remat":
            saved = [str(note) for _, note in saved_residuals(loss, params)]
            assert any(ATTENTION_CHECKPOINT_NAME in note for note in saved), saved
            assert any(LINEAR_CHECKPOINT_NAME in note for note in saved), saved
    for name in ("splash", "remat"):
        np.testing.assert_allclose(results[name][0], results["xla"][0], atol=2e-5)
        for got, want in zip(jax.tree.leaves(results[name][1]), jax.tree.leaves(results["xla"][1])):
            np.testing.assert_allclose(got, want, atol=2e-5)


# --- Shared-prompt and packed rows (dpo_jax.data.packing): RowMask on every backend. ---


def test_cudnn_pairwise_call_on_xla_equals_the_xla_path(qkv):
    """The call the cuDNN backend makes for rows (a [B, 1, L, L] mask, causality as cuDNN's own),
    routed to XLA's implementation, equals the XLA path in values and gradients, for an even row
    length and an odd one (cuDNN's backward with a mask needs even lengths: one position is added)."""
    segments = np.array([[1] * 9 + [2] * 5 + [0] * 2, [1] * 6 + [2] * 7 + [0] * 3])
    branches = np.array([[0, 0, 1, 1, 2, 2, 2, 2, 2, 0, 1, 1, 2, 2, 0, 0], [1, 1, 1, 2, 2, 2, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0]])
    for length in (16, 15):
        rows = RowMask(jnp.asarray(segments[:, :length]), jnp.asarray(branches[:, :length]), num_branches=2)
        q, k, v = (x[:, :length] for x in qkv)
        real = jnp.asarray(segments[:, :length] > 0)[:, :, None, None]

        def loss(q, k, v, attention):
            out = attention(q, k, v)
            return jnp.sum(jnp.where(real, jnp.sin(out), 0.0)), jnp.where(real, out, 0.0)

        def results(attention):
            return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)(
                q, k, v, attention
            )

        (want, want_out), want_grads = results(
            lambda q, k, v: causal_attention(q, k, v, rows, scale=0.3, implementation="xla")
        )
        (got, got_out), got_grads = results(
            lambda q, k, v: _cudnn_attention(q, k, v, rows.pairwise(), scale=0.3, implementation="xla")
        )
        np.testing.assert_allclose(got_out, want_out, atol=1e-6)
        for g, w in zip(got_grads, want_grads):
            np.testing.assert_allclose(g, w, atol=1e-6)


def _row_losses(model, params, batch, mesh, loss_name):
    """Log-probs, loss metrics and gradients of `batch_loss` on a row batch, traced in the mesh's
    sharding context as the trainer traces its step (so splash runs per shard under shard_map)."""
    apply_fn = make_apply_fn(model)

    def run(params, batch):
        def loss(p):
            return batch_loss(p, params, batch, apply_fn=apply_fn, loss_name=loss_name, beta=0.5)

        (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return reference_logps(params, batch, apply_fn=apply_fn), metrics, grads

    return jax.jit(traced_in_context(run, mesh, DEFAULT_LOGICAL_AXIS_RULES))(params, batch)


# Layouts rotate over the cases: both architectures, K = 1, 2 and 4, shared and unshared prompts
# (one view per response, one pass), packed and unpacked rows of truncated examples.
ROW_CASES = [
    ("gpt2", 2, "dpo", dict(share_prompt=True, pack=False)),
    ("gpt2", 4, "plackett_luce", dict(share_prompt=True, pack=True)),
    ("gpt_neox", 2, "dpo", dict(share_prompt=False, pack=True)),
    ("gpt_neox", 4, "plackett_luce", dict(share_prompt=True, pack=False)),
    ("gpt_neox", 1, "sft", dict(share_prompt=True, pack=True)),
]


@pytest.mark.parametrize("arch,num_responses,loss_name,layout", ROW_CASES)
def test_splash_on_rows_equals_xla_in_values_and_gradients(arch, num_responses, loss_name, layout):
    from tests.objectives.test_rows import MAX_LENGTH, VOCAB, row_batch, truncated_split

    mesh = make_mesh((8, 1, 1))
    model, params = tiny_lm(arch, VOCAB, max_positions=MAX_LENGTH)
    host = row_batch(truncated_split(num_responses), **layout)
    batch = make_global_batch(host, mesh)
    want_logps, want_metrics, want_grads = _row_losses(model, params, batch, mesh, loss_name)
    splash = build_model(model.config.replace(attention="splash"))
    logps, metrics, grads = _row_losses(splash, params, batch, mesh, loss_name)
    real = host["example_mask"] > 0
    if layout["pack"]:
        assert real.sum(axis=1).max() > 1  # some row really holds several examples
    np.testing.assert_allclose(np.asarray(logps)[real], np.asarray(want_logps)[real], rtol=1e-5, atol=1e-5)
    for name, (total, count) in want_metrics.items():
        assert float(metrics[name][1]) == float(count), name
        np.testing.assert_allclose(float(metrics[name][0]), float(total), rtol=1e-5, atol=1e-5, err_msg=name)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max()), grads, want_grads
    )
