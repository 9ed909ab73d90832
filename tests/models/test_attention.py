"""Attention backends: every kernel that runs here equals the XLA path in values and gradients; the
TPU and H100 programs compile (deviceless) and contain their kernels' custom calls; "auto" picks by
the platform the program is traced for; the remat policy saves the attention and projections by name."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals  # print_saved_residuals' list, not printed
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dpo_jax.models import ModelConfig, abstract_params, build_model, init_params
from dpo_jax.models import attention as attention_module
from dpo_jax.models.attention import (
    ATTENTION_CHECKPOINT_NAME,
    RowMask,
    _cudnn_attention,
    causal_attention,
    encoder_attention,
    resolve_implementation,
)
from dpo_jax.models.layers import LINEAR_CHECKPOINT_NAME
from dpo_jax.objectives.batch_loss import batch_loss, reference_logps
from dpo_jax.perf import targets
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, make_global_batch, make_mesh, traced_in_context
from dpo_jax.sharding.mesh import BATCH_MESH_AXES, MESH_AXES
from dpo_jax.training.step import make_apply_fn
from tests import deviceless
from tests.synthetic.tiny_models import tiny_lm
from tests.tolerances import assert_f32_close

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
    # Two mask layouts, two XLA programs: each output is a softmax over <= 8 keys of values |v|.
    assert_f32_close(
        causal_attention(q, k, v, jnp.asarray(padding), scale=0.5),
        causal_attention(q, k, v, jnp.asarray(as_pairwise), scale=0.5),
        terms=2 * 8 + 2,
        magnitude=np.abs(v).max(),
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
        assert resolve_implementation("auto", bf16, decode=False, pairwise=True) == "xla"
        assert resolve_implementation("auto", bf16, decode=False, pairwise=True, rows=True) == "splash"
    if deviceless.cuda_plugin_missing() is None:
        with jax.sharding.use_abstract_mesh(deviceless.h100_mesh().abstract_mesh):
            assert resolve_implementation("auto", bf16, decode=False, pairwise=False) == "cudnn"
            assert (
                resolve_implementation("auto", bf16.astype(jnp.float32), decode=False, pairwise=False)
                == "xla"
            )
            assert resolve_implementation("auto", bf16, decode=True, pairwise=False) == "xla"
            assert resolve_implementation("auto", bf16, decode=False, pairwise=True) == "cudnn"
            assert resolve_implementation("auto", bf16, decode=False, pairwise=True, rows=True) == "cudnn"


@pytest.mark.skipif(deviceless.cuda_plugin_missing() is not None, reason="needs the CUDA plugin")
def test_cudnn_takes_256_wide_heads_on_hopper_only():
    """GPT-J's heads are 256 wide: cuDNN's on a Hopper (JAX's check: compute capability 9.0 and on),
    XLA's before it and past 256. The compute capability is the GPU's; this CPU host has none, so it
    comes from the target, an H100 (9.0) or the same description as an A100 (8.0)."""
    heads = {width: jnp.zeros((1, 8, 2, width), jnp.bfloat16) for width in (128, 256, 264)}
    h100 = deviceless.h100_target_config()
    a100 = re.sub(r"cuda_compute_capability\s*{[^}]*}", "cuda_compute_capability { major: 8 }", h100)

    def picks():
        return {w: resolve_implementation("auto", q, decode=False, pairwise=False) for w, q in heads.items()}

    with jax.sharding.use_abstract_mesh(deviceless.h100_mesh().abstract_mesh):
        # No GPU here, no target: JAX's own check would refuse a 256-wide head, and so does "auto".
        assert picks() == {128: "cudnn", 256: "xla", 264: "xla"}
        with targets.cudnn_checks_from_target(h100):
            assert attention_module.cudnn_max_head_dim() == 256
            assert picks() == {128: "cudnn", 256: "cudnn", 264: "xla"}
        with targets.cudnn_checks_from_target(a100):
            assert attention_module.cudnn_max_head_dim() == 128
            assert picks() == {128: "cudnn", 256: "xla", 264: "xla"}
    assert attention_module.cudnn_max_head_dim() == 128  # the checks are this host's again


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


# Pythia-2.8B's head size, GPT-J's (cuDNN's widest on a Hopper), and one past it (XLA's softmax).
@pytest.mark.parametrize("head_dim, cudnn", [(80, True), (256, True), (264, False)])
def test_h100_program_compiles_to_cudnn_flash_attention(head_dim, cudnn):
    reason = deviceless.cuda_plugin_missing()
    if reason:
        pytest.skip(reason)
    with deviceless.cudnn_checks_from_target():
        calls = _compiled_custom_calls(deviceless.h100_mesh(), head_dim=head_dim)
    fmha = {"__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"}
    if cudnn:
        assert fmha <= set(calls), calls
    else:
        assert not any(call.startswith("__cudnn$fmha") for call in calls), calls


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


def _rows_attention(implementation):
    def attention(q, k, v, rows):
        if implementation == "cudnn_call_on_xla":
            return _cudnn_attention(q, k, v, rows.pairwise(), scale=0.3, implementation="xla")
        return causal_attention(q, k, v, rows, scale=0.3, implementation=implementation)

    return attention


@functools.partial(jax.jit, static_argnums=0)
def _rows_outputs_and_grads(implementation, q, k, v, rows):
    """Outputs at the real queries and gradients of sum(sin(outputs)) over them."""
    real = (rows.segment_ids > 0)[:, :, None, None]

    def loss(q, k, v):
        out = _rows_attention(implementation)(q, k, v, rows)
        return jnp.sum(jnp.where(real, jnp.sin(out), 0.0)), jnp.where(real, out, 0.0)

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


def _assert_rows_match_xla(implementation, qkv, segments, branches, num_branches, err_msg=""):
    length = len(segments[0])
    rows = RowMask(jnp.asarray(segments), jnp.asarray(branches), num_branches=num_branches)
    q, k, v = (x[: len(segments), :length] for x in qkv)
    want_out, want_grads = _rows_outputs_and_grads("xla", q, k, v, rows)
    got_out, got_grads = _rows_outputs_and_grads(implementation, q, k, v, rows)
    np.testing.assert_allclose(got_out, want_out, atol=1e-6, err_msg=err_msg)
    for got, want in zip(got_grads, want_grads):
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=err_msg)


def test_cudnn_pairwise_call_on_xla_equals_the_xla_path(qkv):
    """The call the cuDNN backend makes for rows (a [B, 1, L, L] mask, causality as cuDNN's own),
    routed to XLA's implementation, equals the XLA path in values and gradients, for an even row
    length and an odd one (cuDNN's backward with a mask needs even lengths: one position is added)."""
    segments = np.array([[1] * 9 + [2] * 5 + [0] * 2, [1] * 6 + [2] * 7 + [0] * 3])
    branches = np.array(
        [[0, 0, 1, 1, 2, 2, 2, 2, 2, 0, 1, 1, 2, 2, 0, 0], [1, 1, 1, 2, 2, 2, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0]]
    )
    for length in (16, 15):
        _assert_rows_match_xla("cudnn_call_on_xla", qkv, segments[:, :length], branches[:, :length], 2)


def _row_losses(model, params, batch, mesh, loss_name, beta):
    """Log-probs, loss metrics and gradients of `batch_loss` on a row batch (log-probs of `params` as
    the reference: one forward, then forward and backward), traced in the mesh's sharding context as
    the trainer traces its step, so splash runs per shard under shard_map."""
    apply_fn = make_apply_fn(model)

    def run(params, batch):
        logps = reference_logps(params, batch, apply_fn=apply_fn)
        batch = dict(batch, reference_logps=logps)

        def loss(p):
            return batch_loss(p, None, batch, apply_fn=apply_fn, loss_name=loss_name, beta=beta)

        (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return logps, metrics, grads

    return jax.jit(traced_in_context(run, mesh, DEFAULT_LOGICAL_AXIS_RULES))(params, batch)


# Interpret-mode splash is slow on a CPU: two cases cover both architectures, K = 2 and 4, packed and
# unpacked rows of truncated examples (shared prompts: one view per response); the one-pass paths
# (unshared prompts, K = 1) are checked on the attention alone below.
ROW_CASES = [
    ("gpt2", 4, "plackett_luce", dict(share_prompt=True, pack=True)),
    ("gpt_neox", 2, "dpo", dict(share_prompt=True, pack=False)),
]


@pytest.mark.parametrize("arch,num_responses,loss_name,layout", ROW_CASES)
def test_splash_on_rows_equals_xla_in_values_and_gradients(arch, num_responses, loss_name, layout):
    from tests.objectives.test_rows import (
        BETA,
        MAX_LENGTH,
        VOCAB,
        assert_same_metrics_and_grads,
        row_batch,
        truncated_split,
    )

    mesh = make_mesh((8, 1, 1))
    model, params = tiny_lm(arch, VOCAB, max_positions=MAX_LENGTH)
    host = row_batch(truncated_split(num_responses), **layout)
    batch = make_global_batch(host, mesh)
    want_logps, want_metrics, want_grads = _row_losses(model, params, batch, mesh, loss_name, BETA)
    splash = build_model(model.config.replace(attention="splash"))
    logps, metrics, grads = _row_losses(splash, params, batch, mesh, loss_name, BETA)
    real = host["example_mask"] > 0
    if layout["pack"]:
        assert real.sum(axis=1).max() > 1  # some row really holds several examples
    np.testing.assert_allclose(np.asarray(logps)[real], np.asarray(want_logps)[real], rtol=1e-5, atol=1e-5)
    assert_same_metrics_and_grads(metrics, want_metrics, grads, want_grads, beta=BETA)


def test_splash_rows_without_a_shared_prompt_take_segment_ids_and_equal_xla(qkv):
    """Unshared prompts (each response a whole sequence: ids (example, branch)) and K = 1 (prompt and
    response one sequence) on splash equal XLA in values and gradients; so do shared prompts."""
    cases = {
        "unshared, packed": (
            [1] * 10 + [2] * 6 + [0] * 2,
            [1] * 5 + [2] * 5 + [1] * 3 + [2] * 3 + [0] * 2,
            2,
        ),
        "K = 1, packed": ([1] * 10 + [2] * 6 + [0] * 2, [0] * 4 + [1] * 6 + [0] * 2 + [1] * 4 + [0] * 2, 1),
        "shared, packed": (
            [1] * 9 + [2] * 7 + [0] * 2,
            [0, 0, 1, 1, 2, 2, 2, 2, 2, 0, 1, 1, 2, 2, 2, 2, 0, 0],
            2,
        ),
    }
    for name, (segments, branches, num_branches) in cases.items():
        _assert_rows_match_xla("splash", qkv, [segments], [branches], num_branches, err_msg=name)


def _compiled_row_program(mesh, attention="auto"):
    """HLO of the policy forward and backward of a tiny bf16 GPT-NeoX on shared-prompt packed rows
    (K = 2; the reference log-probs precomputed, as the trainer has them), compiled for `mesh`."""
    from tests.objectives.test_rows import row_batch, truncated_split

    mesh = jax.sharding.Mesh(mesh.devices.reshape(-1, 1, 1), MESH_AXES)
    config = ModelConfig("gpt_neox", 256, 64, 1, 2, 128, 256, dtype="bfloat16", attention=attention)
    model = build_model(config)
    host = row_batch(truncated_split(2), share_prompt=True, pack=True)
    host["reference_logps"] = np.zeros(host["response_lengths"].shape, np.float32)
    rows = NamedSharding(mesh, P(BATCH_MESH_AXES))
    batch = {name: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rows) for name, x in host.items()}
    replicated = NamedSharding(mesh, P())
    params = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract_params(model)
    )
    apply_fn = make_apply_fn(model)

    def grads(params, batch):
        def loss(p):
            return batch_loss(p, None, batch, apply_fn=apply_fn, loss_name="dpo", beta=0.1)[0]

        return jax.grad(loss)(params)

    with jax.default_matmul_precision("default"):  # see _compiled_custom_calls
        lowered = jax.jit(traced_in_context(grads, mesh, DEFAULT_LOGICAL_AXIS_RULES)).lower(params, batch)
    return lowered.compile().as_text(), host["input_ids"].shape


def test_h100_row_program_compiles_to_cudnn_flash_attention_with_the_row_mask():
    reason = deviceless.cuda_plugin_missing()
    if reason:
        pytest.skip(reason)
    with deviceless.cudnn_checks_from_target():
        hlo, (num_rows, length) = _compiled_row_program(deviceless.h100_mesh())
    calls = re.findall(r'custom_call_target="([^"]+)"', hlo)
    assert "__cudnn$fmhaScaleBiasSoftmax" in calls and "__cudnn$fmhaScaleBiasSoftmaxBackward" in calls, calls
    # The mask is one [R, 1, L, L] bias for both heads (the odd row length padded to even); no
    # [R, H, L, L] score or softmax array of any dtype is left outside the kernels.
    padded = length + length % 2
    assert f"bf16[{num_rows},1,{padded},{padded}]" in hlo
    assert not re.search(rf"\w+\[{num_rows},2,{padded},{padded}\]", hlo)


def test_tpu_row_program_compiles_to_splash_kernels():
    hlo, (_, length) = _compiled_row_program(deviceless.tpu_mesh())
    calls = re.findall(r'custom_call_target="([^"]+)"', hlo)
    # Forward, dq and dkv kernels for each of the K = 2 response views and for the one pass of rows
    # without a shared prompt (the two branches of the per-shard choice): 3 x (2 + 1).
    assert calls.count("tpu_custom_call") == 9, calls
    # The dense pairwise mask is never built: no [..., L, L] array in the program.
    assert not re.search(rf"\w+\[(\d+,)*{length},{length}\]", hlo)


def test_encoder_attention_on_cudnn_equals_xla_for_padding_anywhere(qkv, monkeypatch):
    """RoBERTa's bidirectional attention: cuDNN's very call (keys in their real-tokens-first view, key
    lengths) on XLA's reference path equals the XLA path and float64, every query of every row."""
    q, k, v = qkv
    mask = np.ones((BATCH, LENGTH), np.int32)
    mask[1, ::3] = 0  # padding in the middle and at both ends
    mask[1, -5:] = 0
    run = lambda implementation: jax.jit(  # noqa: E731
        functools.partial(encoder_attention, scale=HEAD_DIM**-0.5, implementation=implementation)
    )(q, k, v, mask)
    want = numpy_attention(q, k, v, np.broadcast_to(mask[:, None, :] > 0, (BATCH, LENGTH, LENGTH)), HEAD_DIM**-0.5)
    # Softmax over up to LENGTH keys of O(1) values, in fp32.
    assert_f32_close(run("xla"), want, terms=LENGTH, magnitude=np.abs(want).max() + 1)
    assert_f32_close(run("cudnn_on_xla"), want, terms=LENGTH, magnitude=np.abs(want).max() + 1)
    # "auto" takes cuDNN in a program traced for a GPU in bf16 only.
    calls = []
    original = jax.nn.dot_product_attention
    monkeypatch.setattr(
        jax.nn, "dot_product_attention", lambda *a, **kw: calls.append(kw["implementation"]) or original(*a, **kw)
    )
    monkeypatch.setattr(attention_module, "target_platform", lambda: "gpu")
    encoder_attention(q, k, v, mask, scale=1.0)
    assert calls == ["xla"]  # fp32: cuDNN takes bf16 / fp16 only
    calls.clear()
    try:
        encoder_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), mask, scale=1.0)
    except Exception:  # cuDNN itself is absent on this host: the call was made, which is what is tested
        pass
    assert calls == ["cudnn"]
