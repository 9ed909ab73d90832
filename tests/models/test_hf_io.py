"""from_hf / to_hf: round trips through transformers, and errors that name the offending tensor."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from dpo_jax.models import from_hf, to_hf
from dpo_jax.models.hf_io import read_state_dict
from tests.models.conftest import ARCH_SETTINGS, VOCAB, hf_logits, make_hf_model


def _ids():
    return np.random.RandomState(1).randint(1, VOCAB, (2, 11)).astype(np.int32)


@pytest.mark.parametrize("setting", ["gpt2", "neox-parallel-rot0.25", "neox-sequential-rot1.0"])
def test_from_hf_directory_then_to_hf_round_trip(tmp_path, setting):
    arch, overrides = ARCH_SETTINGS[setting]
    hf = make_hf_model(arch, **overrides)
    hf.save_pretrained(tmp_path / "hf")
    model, params = from_hf(str(tmp_path / "hf"))
    ids = _ids()
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    np.testing.assert_allclose(ours, hf_logits(hf, ids), atol=1e-4, rtol=0)

    to_hf(model, params, str(tmp_path / "export"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
    assert type(reloaded) is type(hf)
    np.testing.assert_allclose(hf_logits(reloaded, ids), ours, atol=1e-4, rtol=0)

    _, params_again = from_hf(str(tmp_path / "export"))
    for a, b in zip(_leaves(params), _leaves(params_again)):
        np.testing.assert_array_equal(a, b)


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_scanned_layers_round_trip(tmp_path):
    hf = make_hf_model("gpt2")
    hf.save_pretrained(tmp_path / "hf")
    model, params = from_hf(str(tmp_path / "hf"), scan_layers=True)
    assert params["h"]["layers"]["ln_1"]["scale"].shape == (2, 32)
    to_hf(model, params, str(tmp_path / "export"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
    np.testing.assert_allclose(hf_logits(reloaded, _ids()), hf_logits(hf, _ids()), atol=1e-5, rtol=0)


def test_bf16_export_and_pytorch_bin_checkpoint(tmp_path):
    hf = make_hf_model("gpt_neox")
    model, params = from_hf(_save(hf, tmp_path / "hf"), param_dtype="bfloat16")
    assert params["embed_in"]["embedding"].dtype == jnp.bfloat16
    to_hf(model, params, str(tmp_path / "bf16"), dtype="bfloat16")
    assert next(iter(read_state_dict(str(tmp_path / "bf16")).values())).dtype.name == "bfloat16"
    # A legacy pytorch_model.bin directory (no safetensors) loads through torch.
    os.makedirs(tmp_path / "bin")
    hf.config.save_pretrained(tmp_path / "bin")
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    model_bin, params_bin = from_hf(str(tmp_path / "bin"))
    ids = _ids()
    np.testing.assert_allclose(
        np.asarray(model_bin.apply({"params": params_bin}, jnp.asarray(ids))),
        hf_logits(hf, ids),
        atol=1e-4,
        rtol=0,
    )


def _save(hf, path):
    hf.save_pretrained(path)
    return str(path)


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    directory = _save(make_hf_model("gpt2"), tmp_path / "hf")
    cfg = json.load(open(os.path.join(directory, "config.json")))
    cfg["n_inner"] = 200  # the checkpoint's MLP is 128 wide
    json.dump(cfg, open(os.path.join(directory, "config.json"), "w"))
    with pytest.raises(
        ValueError, match=r"'h\.0\.mlp\.c_fc\.weight' has shape \(32, 128\), expected \(32, 200\)"
    ):
        from_hf(directory)


def test_missing_tensor_is_named(tmp_path):
    from safetensors.numpy import save_file

    directory = _save(make_hf_model("gpt_neox"), tmp_path / "hf")
    state = read_state_dict(directory)
    del state["gpt_neox.layers.1.attention.dense.weight"]
    save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensor 'gpt_neox\.layers\.1\.attention\.dense\.weight'"):
        from_hf(directory)


def test_other_architecture_is_rejected(tmp_path):
    cfg = transformers.LlamaConfig(
        hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=64, vocab_size=VOCAB
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match="model_type 'llama' is not supported"):
        from_hf(str(tmp_path / "llama"))


def test_hub_name_resolves_through_huggingface_hub(tmp_path, monkeypatch):
    directory = _save(make_hf_model("gpt2"), tmp_path / "snapshot")
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, tuple(allow_patterns)))
        return directory

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model, _ = from_hf("EleutherAI/pythia-2.8b-not-local")
    assert calls and calls[0][0] == "EleutherAI/pythia-2.8b-not-local"
    assert "config.json" in calls[0][1] and "*.safetensors" in calls[0][1]
    assert model.config.arch == "gpt2"


def test_unreachable_hub_name_says_which(monkeypatch):
    import huggingface_hub

    def offline(**_):
        raise ConnectionError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(OSError, match="'nobody/nothing' is not a local directory"):
        from_hf("nobody/nothing")
