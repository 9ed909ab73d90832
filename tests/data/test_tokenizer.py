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
from dpo_jax.data.tokenizer import _is_tokenizers_backend_dir


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


def _same_tokenizer(ours, theirs):
    texts = ["Hello world<|endoftext|>", "\n\nHuman: hi there\n\nAssistant: ok", "ünïcödé 123", ""]
    assert type(ours) is type(theirs)
    assert ours.get_vocab() == theirs.get_vocab() and len(ours) == len(theirs)
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert (ours.eos_token_id, ours.pad_token_id) == (theirs.eos_token_id, theirs.pad_token_id)
    assert ours.chat_template == theirs.chat_template
    assert ours(texts)["input_ids"] == theirs(texts)["input_ids"]
    assert ours.init_kwargs == theirs.init_kwargs
    assert tokenizer_fingerprint(ours) == tokenizer_fingerprint(theirs)


def test_tokenizers_backend_directories_load_as_auto_tokenizer_loads_them(tmp_path):
    """Loaded by their class without AutoTokenizer's torch import: the shipped tokenizer, and one saved
    from it with a pad token of its own beside a model's config.json (a reward model's export)."""
    from transformers import AutoTokenizer

    saved = load_tokenizer("tiny")
    saved.add_special_tokens({"pad_token": "<|pad|>"})
    saved.save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    for directory in (str(TINY_TOKENIZER_DIR), str(tmp_path)):
        assert _is_tokenizers_backend_dir(directory)
        _same_tokenizer(load_tokenizer(directory), AutoTokenizer.from_pretrained(directory))
    assert load_tokenizer(str(tmp_path)).pad_token == "<|pad|>"


def test_other_tokenizers_still_go_through_auto_tokenizer(tmp_path):
    load_tokenizer("tiny").save_pretrained(str(tmp_path))
    assert _is_tokenizers_backend_dir(str(tmp_path)) and not _is_tokenizers_backend_dir("gpt2")
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    # A model type AutoTokenizer gives a tokenizer class of its own, custom code, another class.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert not _is_tokenizers_backend_dir(str(tmp_path))
    (tmp_path / "config.json").unlink()
    config_path.write_text(json.dumps({**config, "auto_map": {"AutoTokenizer": [None, "x.Tokenizer"]}}))
    assert not _is_tokenizers_backend_dir(str(tmp_path))
    config_path.write_text(json.dumps({**config, "tokenizer_class": "GPT2Tokenizer"}))
    assert not _is_tokenizers_backend_dir(str(tmp_path))
    assert type(load_tokenizer(str(tmp_path))).__name__ == "GPT2Tokenizer"
