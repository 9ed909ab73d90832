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
