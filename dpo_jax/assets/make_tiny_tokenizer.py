"""Builds the tiny byte-level BPE tokenizer in `dpo_jax/assets/tiny_tokenizer/`.

Run by hand after changing the data fixtures (it takes no flags: the assets room sits before the
commands' flag tables in the flow; to write elsewhere, call `save_tiny_tokenizer` from Python):

    python -m dpo_jax.assets.make_tiny_tokenizer

The tokenizer is GPT-2 shaped on purpose: byte-level BPE, no BOS added, and `<|endoftext|>` as eos, bos,
unk AND pad, so that every test and `:tiny` run meets the pad == eos trap of GPT-2 and Pythia. Its
vocabulary is exactly 512 entries because the tiny models have 512 embedding rows. It is trained on
the texts of the shipped fixtures, so fixture text tokenises into a realistic number of tokens.
"""

import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dpo_jax.assets import TINY_TOKENIZER_DIR

VOCAB_SIZE = 512
END_OF_TEXT = "<|endoftext|>"
FIXTURES_DIR = Path(__file__).resolve().parent.parent / "data" / "fixtures"

# Role markers on their own lines keep the rendered prompt a strict prefix of the rendered
# conversation, which is how the chat source splits prompt from response.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _strings_in(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)


# Fixtures added after the asset was trained: they are tokenised by it, not trained into it, since a
# retrained vocabulary would change every token id that the tests' golden values are built on.
NOT_TRAINED_ON = ("cnn_dailymail",)


def fixture_texts(fixtures_dir: Path = FIXTURES_DIR) -> list[str]:
    """Every string in every fixture record the asset was trained on (all but `NOT_TRAINED_ON`), in a
    stable order, plus the chat role markers."""
    texts = []
    for path in sorted(fixtures_dir.rglob("*.jsonl")):
        if path.relative_to(fixtures_dir).parts[0] in NOT_TRAINED_ON:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(_strings_in(json.loads(line)))
    texts.extend(f"<|{role}|>\n" for role in ("system", "user", "assistant"))
    if not texts:
        raise FileNotFoundError(f"no fixture texts found under {fixtures_dir}")
    return texts


def train_tiny_tokenizer(texts: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    if tokenizer.get_vocab_size() > VOCAB_SIZE:
        raise RuntimeError(
            f"trained vocabulary has {tokenizer.get_vocab_size()} entries, more than {VOCAB_SIZE}"
        )
    return tokenizer


def save_tiny_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=1024,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    # The template goes inside tokenizer_config.json (not a separate .jinja file) so that older
    # transformers releases find it too; special_tokens_map.json is written for the same readers.
    wrapped.save_pretrained(str(out_dir), save_jinja_files=False)
    special = {name: END_OF_TEXT for name in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    tokenizer = train_tiny_tokenizer(fixture_texts())
    save_tiny_tokenizer(tokenizer, TINY_TOKENIZER_DIR)
    print(f"wrote a {tokenizer.get_vocab_size()}-entry tokenizer to {TINY_TOKENIZER_DIR}")


if __name__ == "__main__":
    main()
