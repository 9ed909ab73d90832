"""Tiny random sequence-classification models with their tokenizers, saved as Hugging Face directories:
the GPT-2 reward model (one output) and sentiment classifier (NEGATIVE / POSITIVE) of the tests (made by
the library, dpo_jax.recipes.tiny_classifier, as the recipes make them at --scale=tiny), and a RoBERTa one."""

from pathlib import Path

from dpo_jax.recipes.tiny_classifier import save_tiny_classifier

__all__ = ["byte_level_roberta_tokenizer", "save_tiny_classifier", "save_tiny_roberta_classifier"]


def byte_level_roberta_tokenizer():
    """A RoBERTa tokenizer whose vocabulary is <s> <pad> </s> <unk>, the 256 byte symbols and <mask>, with
    no merges: every byte is a token, so any text encodes, and the ids are those of a real RoBERTa setup."""
    import transformers

    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = printable + [256 + n for n in range(256 - len(printable))]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for code in symbols:
        vocab[chr(code)] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return transformers.RobertaTokenizer(vocab=vocab, merges=[])


def save_tiny_roberta_classifier(path, *, seed: int = 0) -> str:
    """A tiny random RobertaForSequenceClassification (NEGATIVE / POSITIVE) with its tokenizer."""
    from tests.models.conftest import make_hf_roberta

    tokenizer = byte_level_roberta_tokenizer()
    make_hf_roberta(vocab_size=len(tokenizer), seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(Path(path))
