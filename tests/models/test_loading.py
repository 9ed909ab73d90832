"""Naming a model: a local path that does not exist is said to be missing, not sent to the hub."""

import pytest

from dpo_jax import MissingInputError
from dpo_jax.models.loading import resolve_model_path


@pytest.mark.parametrize("name", ["/no/such/sft_run", "./sft_run", "runs/a/sft", "~/sft"])
def test_a_local_path_that_does_not_exist_says_so(name):
    with pytest.raises(MissingInputError, match=f"model directory {name} does not exist"):
        resolve_model_path(name)


@pytest.mark.parametrize("name", ["gpt2", "EleutherAI/pythia-2.8b"])
def test_hub_ids_pass_through(name):
    assert resolve_model_path(name) == name


def test_the_tldr_sft_model_is_described_offline_as_gpt_j_6b():
    import ml_collections

    from dpo_jax.models.loading import describe_model

    model_cfg = ml_collections.ConfigDict(
        dict(name_or_path="CarperAI/openai_summarize_tldr_sft", dtype="bfloat16", remat_policy="full",
             attention="auto", scan_layers=False, dropout_rate=0.0)
    )  # fmt: skip
    described = describe_model(model_cfg, param_dtype="float32")
    assert (described.arch, described.num_layers, described.hidden_size, described.rotary_dim) == (
        "gptj",
        28,
        4096,
        64,
    )
    assert described.vocab_size == 50400 and described.padded_vocab_size == 50432
    assert described.num_params() == 6_050_882_784  # transformers' GPTJForCausalLM of that config (test_gptj)
