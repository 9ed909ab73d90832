import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dpo_jax.run import optim


def make_config(**overrides):
    fields = dict(
        optimizer="rmsprop",
        learning_rate=1e-6,
        warmup_steps=150,
        lr_schedule="constant",
        total_steps=1000,
        weight_decay=0.0,
        adam_b1=0.9,
        adam_b2=0.999,
        adam_eps=1e-8,
        max_grad_norm=0.0,
    )
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def one_update(config, grads, params):
    tx, _ = optim.make_optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


@pytest.mark.parametrize(
    "step, expected_factor", [(0, 1 / 151), (74, 75 / 151), (149, 150 / 151), (150, 1.0), (5000, 1.0)]
)
def test_constant_schedule_warms_up_like_the_reference_code(step, expected_factor):
    _, schedule = optim.make_optimizer(make_config(learning_rate=1e-6, warmup_steps=150))
    np.testing.assert_allclose(schedule(step), 1e-6 * expected_factor, rtol=1e-6)


@pytest.mark.parametrize(
    "lr_schedule, step, expected_factor",
    [
        ("cosine", 4, 5 / 11),
        ("cosine", 10, 1.0),
        ("cosine", 60, 0.5),
        ("cosine", 110, 0.0),
        ("cosine", 500, 0.0),
        ("linear", 10, 1.0),
        ("linear", 35, 0.75),
        ("linear", 110, 0.0),
    ],
)
def test_decaying_schedules_reach_zero_at_total_steps(lr_schedule, step, expected_factor):
    config = make_config(lr_schedule=lr_schedule, learning_rate=2.0, warmup_steps=10, total_steps=110)
    _, schedule = optim.make_optimizer(config)
    np.testing.assert_allclose(schedule(step), 2.0 * expected_factor, rtol=1e-6, atol=1e-7)


def test_clipping_engages_exactly_at_max_grad_norm():
    config = make_config(optimizer="sgd", learning_rate=1.0, warmup_steps=0, max_grad_norm=1.0)
    params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    big = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}
    small = {"a": jnp.array([0.3, 0.0]), "b": jnp.array([0.4])}
    np.testing.assert_allclose(optax.global_norm(one_update(config, big, params)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(one_update(config, big, params)["b"], [-0.8], rtol=1e-6)
    np.testing.assert_allclose(one_update(config, small, params)["b"], [-0.4], rtol=1e-6)
    unclipped = make_config(optimizer="sgd", learning_rate=1.0, warmup_steps=0, max_grad_norm=0.0)
    np.testing.assert_allclose(one_update(unclipped, big, params)["b"], [-4.0], rtol=1e-6)


def test_rmsprop_matches_torch_update_rule():
    learning_rate = 0.01
    tx, _ = optim.make_optimizer(make_config(learning_rate=learning_rate, warmup_steps=0))
    params = np.array([1.0, -2.0, 0.5], np.float32)
    grads_per_step = [np.array([0.1, -0.2, 3.0]), np.array([0.5, 0.0, -1.0]), np.array([-0.3, 0.2, 1e-9])]

    opt_state = tx.init(jnp.asarray(params))
    jax_params = jnp.asarray(params)
    square_avg = np.zeros(3)
    torch_params = params.astype(np.float64)
    for grads in grads_per_step:
        updates, opt_state = tx.update(jnp.asarray(grads, jnp.float32), opt_state, jax_params)
        jax_params = optax.apply_updates(jax_params, updates)
        # torch.optim.RMSprop(alpha=0.99, eps=1e-8): eps added after the square root.
        square_avg = 0.99 * square_avg + 0.01 * grads**2
        torch_params = torch_params - learning_rate * grads / (np.sqrt(square_avg) + 1e-8)
    np.testing.assert_allclose(jax_params, torch_params, rtol=1e-5)


def test_adamw_decays_kernels_but_not_biases_or_norm_scales():
    config = make_config(optimizer="adamw", learning_rate=0.1, warmup_steps=0, weight_decay=0.5)
    params = {
        "Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
        "LayerNorm_0": {"scale": jnp.ones(2)},
    }
    zero_grads = {
        "Dense_0": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)},
        "LayerNorm_0": {"scale": jnp.zeros(2)},
    }
    updates = one_update(config, zero_grads, params)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_array_equal(updates["Dense_0"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["LayerNorm_0"]["scale"], 0.0)


def test_rmsprop_weight_decay_is_added_to_the_gradient_like_torch():
    config = make_config(learning_rate=0.01, warmup_steps=0, weight_decay=0.1)
    params = {"kernel": jnp.array([2.0])}
    updates = one_update(config, {"kernel": jnp.array([0.0])}, params)
    effective_grad = 0.1 * 2.0
    expected = -0.01 * effective_grad / (np.sqrt(0.01 * effective_grad**2) + 1e-8)
    np.testing.assert_allclose(updates["kernel"], [expected], rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(optimizer="lion"), "Unknown optimizer 'lion'"),
        (dict(lr_schedule="step"), "Unknown lr_schedule 'step'"),
        (dict(lr_schedule="cosine", total_steps=100, warmup_steps=100), "total_steps=100, warmup_steps=100"),
        (dict(learning_rate=0.0), "learning_rate must be positive, got 0.0"),
        (dict(warmup_steps=-1), "warmup_steps must be >= 0, got -1"),
        (dict(max_grad_norm=-1.0), "max_grad_norm must be >= 0"),
        (dict(weight_decay=-0.1), "weight_decay must be >= 0, got -0.1"),
        (dict(optimizer="adam", adam_b2=1.0), "b2=1.0"),
        (dict(optimizer="adamw", adam_mu_dtype="float16"), "adam_mu_dtype must be one of"),
    ],
)
def test_bad_settings_fail_naming_the_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        optim.make_optimizer(make_config(**overrides))


def test_missing_field_is_named():
    config = make_config(optimizer="adamw")
    del config["adam_eps"]
    with pytest.raises(ValueError, match="'adam_eps'"):
        optim.make_optimizer(config)


def test_bf16_first_moment_keeps_the_second_in_float32():
    params = {"w": jnp.ones((3,), jnp.float32)}
    tx, _ = optim.make_optimizer(make_config(optimizer="adamw", warmup_steps=0, adam_mu_dtype="bfloat16"))
    state = tx.init(params)
    adam_state = next(
        s for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")
    )
    assert adam_state.mu["w"].dtype == jnp.bfloat16 and adam_state.nu["w"].dtype == jnp.float32
    grads = {"w": jnp.array([0.5, -1.0, 2.0], jnp.float32)}
    updates, _ = tx.update(grads, state, params)
    reference, _ = optim.make_optimizer(make_config(optimizer="adamw", warmup_steps=0))
    want, _ = reference.update(grads, reference.init(params), params)
    # The first step's moments are exact in bf16 for these gradients: the update is the fp32 one.
    np.testing.assert_allclose(updates["w"], want["w"], rtol=1e-6)


def _preset_params(name):
    from dpo_jax.models.config import from_hf_config
    from dpo_jax.models.presets import MODEL_PRESETS

    return from_hf_config(dict(MODEL_PRESETS[name])).num_params()


H100_BYTES = 84_929_347_584


@pytest.mark.parametrize(
    "model, shards, device_bytes, expected",
    [
        ("pythia-2.8b", 1, H100_BYTES, "bfloat16"),  # 61 GB of fp32 state on one 80 GB device
        ("pythia-1.4b", 1, H100_BYTES, "float32"),  # 31 GB
        ("pythia-2.8b", 8, H100_BYTES, "float32"),  # FSDP over 8: 7.6 GB per device
        ("pythia-2.8b", 1, None, "float32"),  # no device memory reported (CPU)
    ],
)
def test_auto_first_moment_dtype_follows_the_state_size(model, shards, device_bytes, expected):
    chosen = optim.auto_adam_mu_dtype(
        _preset_params(model), state_shards=shards, device_bytes=device_bytes, grad_accum_steps=8, reference=True
    )
    assert chosen == expected
