"""The shipped tiny tokenizer and `load_tokenizer`."""

import json

from dpo_jax.assets import TINY_TOKENIZER_DIR
from dpo_jax.assets.make_tiny_tokenizer import (
    VOCAB_SIZE,
    fixture_texts,
    save_tiny_tokenizer,
    train_tiny_tokenizer,
)
from dpo_jax.data import load_tokenizer, tokenizer_fingerprint


def test_tiny_tokenizer_is_gpt2_shaped(tokenizer):
    assert len(tokenizer) <= 512 and VOCAB_SIZE == 512
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == tokenizer.pad_token_id
    ids = tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    assert max(ids) < 512 and tokenizer.decode(ids) == "Hello world"
    assert tokenizer("Hi")["input_ids"] == tokenizer("Hi", add_special_tokens=False)["input_ids"]  # no BOS
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|user|>\nHi\n<|assistant|>\n"


def test_shipped_files_are_what_save_pretrained_writes():
    names = {path.name for path in TINY_TOKENIZER_DIR.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    config = json.loads((TINY_TOKENIZER_DIR / "tokenizer_config.json").read_text())
    assert config["chat_template"] and config["eos_token"] == config["pad_token"] == "<|endoftext|>"


def test_generator_reproduces_the_shipped_tokenizer(tmp_path):
    # Guards the asset against drifting from the fixtures it is trained on.
    save_tiny_tokenizer(train_tiny_tokenizer(fixture_texts()), tmp_path)
    shipped = json.loads((TINY_TOKENIZER_DIR / "tokenizer.json").read_text())
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == shipped


def test_pad_defaults_to_eos_when_missing(tmp_path):
    plain = load_tokenizer("tiny")
    plain.pad_token = None
    plain.save_pretrained(str(tmp_path))
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    reloaded = load_tokenizer(str(tmp_path))
    assert reloaded.pad_token_id == reloaded.eos_token_id
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(load_tokenizer("tiny"))
