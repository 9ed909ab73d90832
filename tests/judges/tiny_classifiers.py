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
