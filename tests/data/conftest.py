"""Fixtures for the data tests: the shipped tiny tokenizer, loaded once."""

import pytest

from dpo_jax.data import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("tiny")
