"""Tiny random GPT-2 sequence-classification models with the shipped tokenizer, saved as a Hugging Face
directory: the reward model (one output) and the sentiment classifier (NEGATIVE / POSITIVE) of the tests."""

from pathlib import Path


def save_tiny_classifier(path, *, num_labels: int, seed: int = 0) -> str:
    import torch
    import transformers

    from dpo_jax.data import load_tokenizer

    tokenizer = load_tokenizer("tiny")
    labels = (
        {0: "NEGATIVE", 1: "POSITIVE"} if num_labels == 2 else {i: f"LABEL_{i}" for i in range(num_labels)}
    )
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=32,
        n_layer=1,
        n_head=2,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.GPT2ForSequenceClassification(config)
    with torch.no_grad():  # a stronger head than the default init, so scores spread out
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(Path(path))


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
