"""Tiny random GPT-2 sequence-classification models with the shipped tokenizer, saved as a Hugging Face
directory: the reward model (one output) and the sentiment classifier (NEGATIVE / POSITIVE) of the tests.
The recipes make the same model at `--scale=tiny` (dpo_jax.recipes.tiny_classifier)."""

from dpo_jax.recipes.tiny_classifier import save_tiny_classifier

__all__ = ["save_tiny_classifier"]
