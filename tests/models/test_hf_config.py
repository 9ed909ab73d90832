"""The config.json of our exports, written and read without transformers (whose config classes import
torch): what transformers makes of it is what `to_hf_config` and `save_pretrained` gave, and reading it
back with json gives the model transformers' AutoConfig gives."""

import json

import jax
import pytest
import transformers

from dpo_jax.models import build_model, from_hf_config, hf_config_dict, init_params, to_hf, to_hf_config
from dpo_jax.models.hf_io import read_hf_config
from dpo_jax.models.presets import TINY_MODELS
from dpo_jax.models.reward import (
    ScalarHeadModel,
    from_hf_reward_model,
    scalar_head_params,
    to_hf_reward_model,
)
from tests.models.conftest import make_hf_model

ARCHS = ["gpt2", "gpt_neox", "gptj"]
_NOT_VALUES = ("_name_or_path", "transformers_version")


def _values(hf_config) -> dict:
    return {k: v for k, v in hf_config.to_dict().items() if k not in _NOT_VALUES}


def _sources(arch: str):
    """The config of a random-init run (a bare dict, as `random_init_config`) and of a transformers model."""
    return {"dict": dict(TINY_MODELS[arch]), "transformers": make_hf_model(arch).config}


def _tiny_model(hf_config):
    cfg = from_hf_config(hf_config)
    model = build_model(cfg)
    return model, init_params(model, jax.random.PRNGKey(0))


@pytest.mark.parametrize("arch", ARCHS)
def test_the_dict_holds_all_that_save_pretrained_writes(tmp_path, arch):
    for name, source in _sources(arch).items():
        cfg = from_hf_config(source)
        ours = hf_config_dict(cfg)
        assert ours["model_type"] == arch and ours["architectures"], name
        to_hf_config(cfg).save_pretrained(tmp_path / name)
        written = json.loads((tmp_path / name / "config.json").read_text())
        written.pop("transformers_version")
        assert {k: ours.get(k, "missing") for k in written} == written, name
        # Nothing the model is built from is left to a default: the dict alone gives the same model.
        assert from_hf_config(ours) == cfg and from_hf_config(json.loads(json.dumps(ours))) == cfg


@pytest.mark.parametrize("arch", ARCHS)
def test_to_hf_export_loads_in_transformers_and_reads_back_the_same(tmp_path, arch):
    for name, source in _sources(arch).items():
        model, params = _tiny_model(source)
        out = tmp_path / name
        to_hf(model, params, str(out))
        assert _values(transformers.AutoConfig.from_pretrained(out)) == _values(to_hf_config(model.config))
        read = read_hf_config(str(out))
        assert read == json.loads((out / "config.json").read_text())  # json, not transformers
        through_transformers = from_hf_config(transformers.AutoConfig.from_pretrained(out))
        assert from_hf_config(read) == through_transformers == model.config
        assert read["eos_token_id"] == through_transformers.hf_config["eos_token_id"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pad_token_id", [None, 7, 515])  # none, in the vocabulary, added past it
def test_reward_export_config_is_what_the_transformers_object_gave(tmp_path, arch, pad_token_id):
    for name, source in _sources(arch).items():
        lm, lm_params = _tiny_model(source)
        model = ScalarHeadModel(lm.config)
        params = scalar_head_params(lm_params, jax.random.PRNGKey(1), hidden_size=lm.config.hidden_size)
        out = tmp_path / name
        to_hf_reward_model(model, params, str(out), pad_token_id=pad_token_id)
        # The object the export built before it wrote config.json itself.
        expected = to_hf_config(lm.config)
        expected.architectures = [type(expected).__name__.replace("Config", "ForSequenceClassification")]
        expected.num_labels = 1
        expected.pad_token_id = pad_token_id
        if pad_token_id is not None and pad_token_id >= lm.config.vocab_size:
            expected.vocab_size = pad_token_id + 1
        loaded = transformers.AutoConfig.from_pretrained(out)
        assert _values(loaded) == _values(expected) and loaded.num_labels == 1
        reward_model, _ = from_hf_reward_model(str(out))
        assert reward_model.config == from_hf_config(loaded)


def test_other_directories_are_read_by_transformers_with_its_defaults(tmp_path):
    """A hub config.json may leave fields to its class's defaults (Pythia's EOS id): transformers fills them."""
    (tmp_path / "config.json").write_text(
        json.dumps(
            dict(
                model_type="gpt_neox",
                vocab_size=96,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=64,
            )
        )
    )
    read = read_hf_config(str(tmp_path))
    assert read["eos_token_id"] == 2 and read["rope_parameters"]["partial_rotary_factor"] == 0.25
