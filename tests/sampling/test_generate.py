"""generate(): cached decoding equals repeated full forwards, padding is invisible, filters and EOS behave,
and sampled frequencies follow the distribution they claim to sample."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpo_jax.models import abstract_params
from dpo_jax.sampling import SamplingSettings, generate
from dpo_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, logical_to_mesh_shardings, make_mesh
from tests.synthetic.tiny_models import tiny_lm

VOCAB, NEW_TOKENS = 16, 5


def tiny_model(arch):
    return tiny_lm(arch, VOCAB)


def settings(**values) -> SamplingSettings:
    return SamplingSettings(**{"max_new_tokens": NEW_TOKENS, **values})


def left_padded_prompts(seed, lengths, width):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, width - length :] = rng.integers(1, VOCAB, length)
        mask[row, width - length :] = 1
    return ids, mask


# Most tests share one prompt shape so that jit reuses one compiled program per model.
PROMPTS = left_padded_prompts(0, lengths=[5, 2, 4, 1], width=5)


def greedy_by_full_forwards(model, params, ids, mask, steps):
    """Oracle without a cache: re-run the whole sequence and take the argmax at the last real position.

    The sequence lives in a fixed-size buffer whose unused tail is masked out (causality already hides
    it), so the forward compiles once.
    """
    batch, width = ids.shape
    buffer = np.concatenate([ids, np.zeros((batch, steps), np.int32)], axis=1)
    buffer_mask = np.concatenate([mask, np.zeros((batch, steps), np.int32)], axis=1)
    apply = jax.jit(lambda ids, mask: model.apply({"params": params}, ids, attention_mask=mask))
    tokens, logprobs = [], []
    for step in range(steps):
        last = np.asarray(apply(buffer, buffer_mask))[:, width + step - 1].astype(np.float64)
        token = last.argmax(-1).astype(np.int32)
        top = last.max(-1, keepdims=True)
        log_normaliser = top[:, 0] + np.log(np.exp(last - top).sum(-1))
        tokens.append(token)
        logprobs.append(last[np.arange(batch), token] - log_normaliser)
        buffer[:, width + step], buffer_mask[:, width + step] = token, 1
    return np.stack(tokens, 1), np.stack(logprobs, 1)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_greedy_equals_argmax_of_full_forwards(arch):
    model, params = tiny_model(arch)
    ids, mask = PROMPTS
    out = generate(model, params, ids, mask, settings=settings(temperature=0), rng=jax.random.key(1))
    want_tokens, want_logprobs = greedy_by_full_forwards(model, params, ids, mask, NEW_TOKENS)
    np.testing.assert_array_equal(out["tokens"], want_tokens)
    np.testing.assert_allclose(out["logprobs"], want_logprobs, atol=1e-5)
    assert np.all(np.asarray(out["mask"]) == 1)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_left_padding_does_not_change_outputs(temperature):
    model, params = tiny_model("gpt2")
    ids, mask = PROMPTS
    padded_ids, padded_mask = np.pad(ids, ((0, 0), (3, 0))), np.pad(mask, ((0, 0), (3, 0)))
    sample = functools.partial(
        generate, model, params, settings=settings(temperature=temperature), rng=jax.random.key(3)
    )
    plain, padded = sample(ids, mask), sample(padded_ids, padded_mask)
    np.testing.assert_array_equal(plain["tokens"], padded["tokens"])
    np.testing.assert_allclose(plain["logprobs"], padded["logprobs"], atol=1e-5)


def test_top_k_one_and_tiny_top_p_are_greedy():
    model, params = tiny_model("gpt_neox")
    ids, mask = PROMPTS
    sample = lambda rng, **values: generate(model, params, ids, mask, settings=settings(**values), rng=rng)
    greedy = sample(jax.random.key(0), temperature=0)["tokens"]
    np.testing.assert_array_equal(sample(jax.random.key(5), temperature=1.5, top_k=1)["tokens"], greedy)
    np.testing.assert_array_equal(sample(jax.random.key(6), top_p=1e-6)["tokens"], greedy)


def test_rows_stop_at_eos_and_emit_pad_after():
    model, params = tiny_model("gpt2")
    ids, mask = PROMPTS
    sample = functools.partial(generate, model, params, ids, mask, settings=settings(temperature=0))
    free = np.asarray(sample(rng=jax.random.key(0))["tokens"])
    eos, pad = int(free[0, 1]), VOCAB + 3
    out = sample(rng=jax.random.key(0), eos_id=eos, pad_id=pad)
    tokens, mask_out, logprobs = (np.asarray(out[k]) for k in ("tokens", "mask", "logprobs"))
    stopped = 0
    for row in range(len(ids)):
        hits = np.flatnonzero(free[row] == eos)
        end = hits[0] + 1 if len(hits) else NEW_TOKENS
        stopped += end < NEW_TOKENS
        np.testing.assert_array_equal(tokens[row, :end], free[row, :end])
        assert np.all(tokens[row, end:] == pad) and np.all(logprobs[row, end:] == 0)
        np.testing.assert_array_equal(mask_out[row], np.arange(NEW_TOKENS) < end)
    assert stopped >= 1


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.3, 0, 0.6)])
def test_one_token_frequencies_match_the_filtered_softmax(temperature, top_k, top_p):
    model, params = tiny_model("gpt2")
    num_samples = 4000
    ids, mask = left_padded_prompts(8, lengths=[3], width=3)
    logits = np.asarray(model.apply({"params": params}, ids), np.float64)[0, -1] / temperature
    order = np.argsort(-logits, kind="stable")
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    keep = np.zeros(VOCAB, bool)
    kept_mass = 0.0
    for rank, token in enumerate(order):
        if (top_k and rank >= top_k) or (rank > 0 and kept_mass >= top_p):
            break
        keep[token] = True
        kept_mass += probs[token]
    expected = np.where(keep, probs, 0.0) / probs[keep].sum()
    out = generate(
        model,
        params,
        np.repeat(ids, num_samples, 0),
        np.repeat(mask, num_samples, 0),
        settings=SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=1),
        rng=jax.random.key(9),
    )
    counts = np.bincount(np.asarray(out["tokens"])[:, 0], minlength=VOCAB)
    assert np.all(counts[~keep] == 0)
    observed, want = counts[keep], num_samples * expected[keep]
    chi_square = np.sum((observed - want) ** 2 / want)
    # 99.99th percentile of chi-square with <= 15 degrees of freedom is about 44.
    assert chi_square < 44, (chi_square, observed, want)
    assert keep.sum() >= 2  # the case is not degenerate
    raw_logprobs = logits * temperature - np.log(np.exp(logits * temperature).sum())
    np.testing.assert_allclose(
        out["logprobs"][:, 0], raw_logprobs[np.asarray(out["tokens"])[:, 0]], atol=1e-5
    )


def test_params_sharded_on_a_mesh_give_the_same_outputs():
    model, params = tiny_model("gpt_neox")
    mesh = make_mesh((2, 2, 2))
    shardings = logical_to_mesh_shardings(
        abstract_params(model, boxed=True), mesh, DEFAULT_LOGICAL_AXIS_RULES
    )
    sharded = jax.device_put(params, shardings)
    assert any(len(leaf.sharding.device_set) == 8 for leaf in jax.tree.leaves(sharded))
    ids, mask = PROMPTS
    run = lambda p: generate(model, p, ids, mask, settings=settings(), rng=jax.random.key(1))
    want, got = run(params), run(sharded)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_allclose(got["logprobs"], want["logprobs"], atol=1e-5)


def test_bad_settings_are_errors():
    model, params = tiny_model("gpt2")
    ids, mask = left_padded_prompts(11, lengths=[2], width=3)
    call = lambda ids, mask, **values: generate(
        model, params, ids, mask, settings=SamplingSettings(**{"max_new_tokens": 2, **values}), rng=jax.random.key(0)
    )
    with pytest.raises(ValueError, match="left padded"):
        call(ids[:, ::-1].copy(), mask[:, ::-1].copy())
    with pytest.raises(ValueError, match="max_position_embeddings"):
        call(ids, mask, max_new_tokens=30)
    with pytest.raises(TypeError, match="SamplingSettings"):  # no untyped settings past the entry point
        generate(model, params, ids, mask, settings=dict(temperature=1.0, max_new_tokens=2), rng=jax.random.key(0))
    assert jnp.asarray(call(ids, mask)["tokens"]).shape == (1, 2)


def test_a_row_samples_the_same_alone_or_in_any_batch():
    """Row keys, not batch positions, fix a row's random numbers."""
    model, params = tiny_model("gpt2")
    ids, mask = PROMPTS
    keys = jax.random.split(jax.random.key(4), len(ids))
    sample = functools.partial(generate, model, params, settings=settings(temperature=1.0))
    together = sample(ids, mask, rng=keys)
    order = np.array([2, 0, 3, 1])
    shuffled = sample(ids[order], mask[order], rng=keys[order])
    alone = sample(ids[2:3], mask[2:3], rng=keys[2:3])
    np.testing.assert_array_equal(np.asarray(shuffled["tokens"]), np.asarray(together["tokens"])[order])
    np.testing.assert_array_equal(alone["tokens"][0], together["tokens"][2])


def test_samples_of_a_prompt_share_one_prefill_and_equal_repeated_prompts():
    model, params = tiny_model("gpt_neox")
    ids, mask = PROMPTS
    keys = jax.random.split(jax.random.key(5), 3 * len(ids))
    sample = functools.partial(generate, model, params, settings=settings(), rng=keys)
    shared = sample(ids, mask, num_samples=3)
    repeated = sample(np.repeat(ids, 3, axis=0), np.repeat(mask, 3, axis=0))
    np.testing.assert_array_equal(shared["tokens"], repeated["tokens"])
    # Sums over <= 5 tokens of fp32 log-probs near log(16): a few ulps each.
    np.testing.assert_allclose(shared["logprobs"], repeated["logprobs"], atol=1e-5)
    assert len({tuple(row) for row in np.asarray(shared["tokens"])[:3]}) > 1  # 3 different samples


def test_inverse_cdf_draws_each_index_with_its_weight_and_never_a_zero_weight():
    from dpo_jax.sampling.generate import CDF_BLOCK_MULTIPLE, _block_count, inverse_cdf

    vocab = 6 * CDF_BLOCK_MULTIPLE + 37  # padded to 7 x 128: 128 blocks of 7
    padded = 7 * CDF_BLOCK_MULTIPLE
    blocks = _block_count(padded)
    block = padded // blocks
    assert (blocks, block) == (128, 7)
    rng = np.random.default_rng(0)
    weights = rng.random(vocab) ** 4
    weights[rng.random(vocab) < 0.5] = 0.0  # filtered tokens, scattered
    weights[:5] = weights[-5:] = 0.0  # at both ends: u = 0 and u -> 1 must not reach them
    weights[block : 3 * block] = 0.0  # whole blocks without mass
    # A grid of uniforms: index i must be drawn for a share weights[i] / total of them, within 1 / n
    # per end of its interval, plus the float32 running sums' rounding (at most a block's and the
    # block sums' terms, each within one eps of the total).
    n = 40_000
    u = np.concatenate([(np.arange(n) + 0.5) / n, [0.0, np.nextafter(np.float32(1), np.float32(0))]])
    table = jnp.tile(jnp.asarray(weights, jnp.float32), (len(u), 1))
    drawn = np.asarray(inverse_cdf(table, jnp.asarray(u, jnp.float32)))
    assert np.all(weights[drawn] > 0)
    share = np.bincount(drawn[:n], minlength=vocab) / n
    rounding = 2 * (block + blocks) * np.finfo(np.float32).eps
    np.testing.assert_allclose(share, weights / weights.sum(), atol=2 / n + rounding)


def test_the_search_cuts_a_padded_vocabulary_into_blocks_that_tensor_shards_split_evenly():
    from dpo_jax.sampling.generate import _block_count

    assert _block_count(50304) == 384  # GPT-2's and Pythia's padded vocabulary: 384 blocks of 131
    assert _block_count(512) == 512 and _block_count(128) == 128
    assert all(_block_count(v) % 128 == 0 and v % _block_count(v) == 0 for v in range(128, 60_000, 128))
