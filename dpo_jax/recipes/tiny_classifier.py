"""A tiny random sentiment classifier (GPT-2 body, NEGATIVE / POSITIVE head) for `--scale=tiny` recipes,
and (`--kind=lm`) a tiny random language model, the stand-in of a prompting baseline's base model.

    python -m dpo_jax.recipes.tiny_classifier --out=DIR [--seed=0] [--kind=classifier|lm]

The paper's ground-truth reward is a RoBERTa-large sentiment classifier from the hub; a recipe at
tiny scale runs without the hub, so it makes this stand-in: a Hugging Face
GPT2ForSequenceClassification directory with the shipped tiny tokenizer. Its scores are a fixed
random function of the text: the pipeline runs end to end, the numbers mean nothing about sentiment.
"""

from __future__ import annotations

from pathlib import Path

from dpo_jax.config.command_line import parse_command, run_command


def save_tiny_classifier(path, *, num_labels: int = 2, seed: int = 0) -> str:
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


def save_tiny_lm(path, *, seed: int = 0) -> str:
    """A Hugging Face GPT-2 LM of the `:tiny` configs' shape with the tiny tokenizer, randomly initialised."""
    import torch
    import transformers

    from dpo_jax.data import load_tokenizer
    from dpo_jax.models.presets import TINY_MODELS

    tokenizer = load_tokenizer("tiny")
    shape = {k: v for k, v in TINY_MODELS["gpt2"].items() if k != "model_type"}
    config = transformers.GPT2Config(**shape, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(Path(path))


FLAGS = (
    ("out", str, None, "the model's directory"),
    ("seed", int, 0, "the random seed"),
    ("kind", str, "classifier", "classifier | lm (a tiny random language model)"),
)


def main(argv=None) -> int:
    prog = "python -m dpo_jax.recipes.tiny_classifier"
    args = parse_command(prog, argv, FLAGS, doc=__doc__, choices={"kind": ("classifier", "lm")}, required=("out",))
    if args.kind == "lm":
        print(f"language model: {save_tiny_lm(args.out, seed=args.seed)}")
    else:
        print(f"classifier: {save_tiny_classifier(args.out, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    run_command(main)
