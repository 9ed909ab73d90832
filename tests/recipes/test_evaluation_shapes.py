"""The configs' `sampling` fields (what `aot --program=sample|score` compiles) are the calls the
paper-scale recipes make: rows per decode call, samples per prompt, new tokens and the scorer."""

import pytest

from configs import hh, imdb, tldr
from dpo_jax.recipes import get_recipe


@pytest.mark.parametrize("name, config", [("tldr", tldr), ("hh", hh)])
def test_win_rate_recipes_sample_best_of_n_as_the_config_says(name, config):
    recipe = get_recipe(name).config("paper")
    sampling = config.get_config().sampling
    assert (sampling.batch_size, sampling.num_samples, sampling.max_new_tokens) == (
        recipe.batch_size, recipe.best_of_n, recipe.max_new_tokens,
    )  # fmt: skip
    assert sampling.scorer == ""  # Best-of-N's selector: the recipe's reward model, the policy's architecture


def test_the_imdb_recipe_samples_and_scores_as_the_config_says():
    recipe = get_recipe("imdb").config("paper")
    sampling = imdb.get_config().sampling
    assert (sampling.batch_size, sampling.num_samples, sampling.max_new_tokens, sampling.scorer) == (
        recipe.sampling_batch_size, recipe.num_samples, recipe.max_new_tokens, recipe.classifier,
    )  # fmt: skip
    assert recipe.frontier_samples == recipe.num_samples
