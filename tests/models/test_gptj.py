"""GPT-J against transformers' GPTJForCausalLM: the interleaved rotary, logits on several rotary_dim / head
configurations, padding, greedy decoding against `generate`, and Hugging Face directories both ways
(safetensors, sharded pytorch_model-*.bin with their index, fp16 and bf16)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from dpo_jax.models import from_hf, from_hf_config, to_hf
from dpo_jax.models.gpt_neox import apply_rotary
from dpo_jax.models.gptj import apply_interleaved_rotary
from dpo_jax.models.presets import preset
from dpo_jax.sampling import generate
from dpo_jax.sampling.settings import SamplingSettings
from tests.models.conftest import VOCAB, hf_logits, hf_params, make_hf_model

# The bar for fp32 logits (the hidden check allows 1e-4): about 100 float32 ulps of logits
# of magnitude < 1, far below what a wrong rotary pairing or a missing bias moves them (~1e-1).
TOL = 1e-5

# (overrides of conftest's tiny GPT-J): head counts 1-4, head_dim 8-16, rotary_dim 2 .. the whole head.
SETTINGS = {
    "h4-rot4": {},
    "h2-rot8-hd16": {"n_head": 2, "rotary_dim": 8},
    "h4-rot-whole-head": {"rotary_dim": 8},
    "h3-rot2-inner48-gelu": {
        "n_embd": 24,
        "n_head": 3,
        "rotary_dim": 2,
        "n_inner": 48,
        "activation_function": "gelu",
    },
    "h1-rot16-whole-head": {"n_embd": 16, "n_head": 1, "rotary_dim": 16},
}


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def setting(request):
    """(name, HF model, our module, params): one per configuration, shared by this module's tests."""
    hf = make_hf_model("gptj", **SETTINGS[request.param])
    model, params = hf_params(hf)
    return request.param, hf, model, params


def _ids(batch, length, seed=0):
    return np.random.RandomState(seed).randint(1, VOCAB, (batch, length)).astype(np.int32)


def test_interleaved_rotary_is_transformers_rotate_every_two():
    from transformers.models.gptj import modeling_gptj

    rng = np.random.RandomState(0)
    x = rng.standard_normal((2, 5, 3, 12)).astype(np.float32)
    positions = rng.randint(0, 60, (2, 5)).astype(np.int32)
    rotary_dim = 8
    table = modeling_gptj.create_sinusoidal_positions(64, rotary_dim)[torch.tensor(positions)]
    sin, cos = torch.split(table, rotary_dim // 2, dim=-1)
    x_t = torch.tensor(x)
    rotated = modeling_gptj.apply_rotary_pos_emb(x_t[..., :rotary_dim], sin, cos)
    want = torch.cat([rotated, x_t[..., rotary_dim:]], dim=-1).numpy()
    got = np.asarray(apply_interleaved_rotary(jnp.asarray(x), jnp.asarray(positions), rotary_dim))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    np.testing.assert_array_equal(got[..., rotary_dim:], x[..., rotary_dim:])
    # GPT-NeoX's rotate-half pairs other features: the two layouts are not interchangeable.
    neox = np.asarray(apply_rotary(jnp.asarray(x), jnp.asarray(positions), rotary_dim, 10000.0))
    assert np.abs(neox - want).max() > 0.1


def test_logits_match_transformers(setting):
    name, hf, model, params = setting
    ids = _ids(3, 17)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    assert ours.shape == (3, 17, VOCAB)
    np.testing.assert_allclose(ours, hf_logits(hf, ids), atol=TOL, rtol=0, err_msg=name)


def test_padded_rows_match_the_unpadded_sequences(setting):
    name, hf, model, params = setting
    lengths, width = [11, 6, 3], 11
    ids, mask = np.zeros((3, width), np.int32), np.zeros((3, width), np.int32)
    seqs = [_ids(1, n, seed=i)[0] for i, n in enumerate(lengths)]
    for i, s in enumerate(seqs):  # row 0 full, row 1 left padded, row 2 right padded
        where = slice(width - len(s), width) if i == 1 else slice(0, len(s))
        ids[i, where], mask[i, where] = s, 1
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    for i, s in enumerate(seqs):
        got = ours[i][mask[i].astype(bool)]
        np.testing.assert_allclose(
            got, hf_logits(hf, s[None])[0], atol=TOL, rtol=0, err_msg=f"{name} row {i}"
        )


def test_scan_and_remat_do_not_change_logits():
    hf = make_hf_model("gptj")
    plain, plain_params = hf_params(hf)
    ids = jnp.asarray(_ids(2, 9))
    want = np.asarray(plain.apply({"params": plain_params}, ids))
    model, params = hf_params(hf, scan_layers=True, remat_policy="full")
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, ids)), want, atol=TOL, rtol=0)


def test_greedy_decoding_equals_transformers_generate():
    # Weights 5x transformers' init: next-token distributions peaked enough that no argmax is a near-tie.
    hf = make_hf_model("gptj", initializer_range=0.1)
    model, params = hf_params(hf)
    prompts, new_tokens = _ids(3, 6, seed=4), 8
    with torch.no_grad():
        theirs = hf.generate(
            torch.tensor(prompts, dtype=torch.long),
            attention_mask=torch.ones(prompts.shape, dtype=torch.long),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )[:, prompts.shape[1] :].numpy()
    ours = generate(
        model,
        params,
        prompts,
        np.ones_like(prompts),
        settings=SamplingSettings(temperature=0.0, max_new_tokens=new_tokens),
        rng=jax.random.key(0),
    )
    np.testing.assert_array_equal(np.asarray(ours["tokens"]), theirs)


def _leaves(tree):
    return [np.asarray(x, np.float32) for x in jax.tree.leaves(tree)]


def test_directory_round_trip_through_transformers(tmp_path):
    hf = make_hf_model("gptj", rotary_dim=6, n_head=2)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="40KB")  # sharded safetensors with an index
    assert os.path.exists(tmp_path / "hf" / "model.safetensors.index.json")
    model, params = from_hf(str(tmp_path / "hf"))
    ids = _ids(2, 11, seed=1)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    np.testing.assert_allclose(ours, hf_logits(hf, ids), atol=TOL, rtol=0)

    to_hf(model, params, str(tmp_path / "export"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
    assert type(reloaded) is transformers.GPTJForCausalLM and reloaded.config.rotary_dim == 6
    for name, tensor in hf.state_dict().items():  # every tensor comes back exactly
        np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    _, params_again = from_hf(str(tmp_path / "export"))
    for a, b in zip(_leaves(params), _leaves(params_again)):
        np.testing.assert_array_equal(a, b)


def _save_sharded_bins(hf, directory, dtype, shards=3):
    """A legacy transformers directory: pytorch_model-0000k-of-0000n.bin shards and their index."""
    os.makedirs(directory)
    hf.config.save_pretrained(directory)
    state = {name: t.to(dtype).contiguous() for name, t in hf.state_dict().items()}
    names = sorted(state)
    weight_map = {}
    for k in range(shards):
        filename = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
        part = {name: state[name] for name in names[k::shards]}
        torch.save(part, os.path.join(directory, filename))
        weight_map.update(dict.fromkeys(part, filename))
    total = sum(t.numel() * t.element_size() for t in state.values())
    with open(os.path.join(directory, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return state


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sharded_pytorch_bins_in_half_precision(tmp_path, dtype):
    hf = make_hf_model("gptj")
    state = _save_sharded_bins(hf, tmp_path / "bins", dtype)
    model, params = from_hf(str(tmp_path / "bins"))
    # The fp32 params hold the half-precision weights exactly: export them and compare bit for bit.
    to_hf(model, params, str(tmp_path / "export"))
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).state_dict()
    for name, tensor in state.items():
        np.testing.assert_array_equal(exported[name].numpy(), tensor.float().numpy(), err_msg=name)
    to_hf(
        model,
        params,
        str(tmp_path / "export_half"),
        dtype="bfloat16" if dtype == torch.bfloat16 else "float16",
    )
    half = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "export_half"), dtype=dtype
    ).state_dict()
    for name, tensor in state.items():
        assert half[name].dtype == dtype
        torch.testing.assert_close(half[name], tensor, rtol=0, atol=0)


def test_parameter_count_is_transformers():
    hf = make_hf_model("gptj")
    assert from_hf_config(hf.config).num_params() == sum(p.numel() for p in hf.parameters())
    with torch.device("meta"):  # GPT-J-6B's shapes, no memory
        big = transformers.GPTJForCausalLM(transformers.GPTJConfig(**preset("gpt-j-6b")))
    assert from_hf_config(preset("gpt-j-6b")).num_params() == sum(p.numel() for p in big.parameters())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rotary_dim": None}, "rotary_dim=None is not supported with n_head > 1"),
        ({"tie_word_embeddings": True}, "tie_word_embeddings=True is not supported"),
        ({"rotary_dim": 10}, r"rotary_dim must be in \(0, head_dim=8\]"),
        ({"rotary_dim": 3}, "rotary dimension 3 must be even"),
    ],
)
def test_configs_we_cannot_reproduce_are_refused(overrides, message):
    config = {**make_hf_model("gptj").config.to_dict(), **overrides}
    with pytest.raises(ValueError, match=message):
        from_hf_config(config)


def test_the_trainers_chunked_logps_include_the_head_bias():
    """The trainer projects only counted positions (`HiddenStates`); GPT-J's head bias must be in them."""
    from dpo_jax.objectives.logps import next_token_targets, sequence_logps, token_logps
    from dpo_jax.training.step import make_apply_fn

    hf = make_hf_model("gptj")
    with torch.no_grad():
        hf.lm_head.bias.normal_(0.0, 1.0)  # a bias that moves log-probs by ~1, not by rounding
    model, params = hf_params(hf)
    ids = jnp.asarray(_ids(2, 9, seed=2))
    mask = jnp.ones_like(ids).at[1, 6:].set(0)
    loss_mask = mask.at[:, :3].set(0)
    want, _ = sequence_logps(model.apply({"params": params}, ids, attention_mask=mask), ids, loss_mask)
    targets, counted = next_token_targets(ids, loss_mask)
    hidden = make_apply_fn(model)(params, ids, mask)
    got = (token_logps(hidden, targets, counted, chunk_size=4) * counted).sum(-1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=TOL, rtol=0)
    without_bias = hidden._replace(unembed_bias=None)
    assert (
        np.abs(np.asarray((token_logps(without_bias, targets, counted) * counted).sum(-1) - want)).max() > 0.1
    )
