"""Files shipped with the package: the tiny tokenizer used by the tests and the `:tiny` CPU configs."""

from pathlib import Path

TINY_TOKENIZER_DIR = Path(__file__).resolve().parent / "tiny_tokenizer"
