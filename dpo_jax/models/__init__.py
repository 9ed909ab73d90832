"""Flax GPT-2 and GPT-NeoX (Pythia) language models and their Hugging Face import/export."""
