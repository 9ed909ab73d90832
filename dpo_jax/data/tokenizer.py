"""Loading the tokenizer (hub name, local directory, or "tiny" for the shipped one) and its identity.

The pad token is set to EOS when the tokenizer has none (GPT-2, Pythia): padding positions are told
apart by the masks the loader builds from structure, never by comparing ids with pad_id.

transformers' `AutoTokenizer` imports torch (its config classes do, ~2 s per process) although no
tokenizer needs it: a local directory saved from a `TokenizersBackend` (the shipped tiny tokenizer and
every export of a model trained with it) is loaded by that class directly, as AutoTokenizer would.
"""

from __future__ import annotations

import hashlib
import json
import os

from dpo_jax import UserError
from dpo_jax.assets import TINY_TOKENIZER_DIR

TINY_ALIAS = "tiny"

# Model types for which AutoTokenizer loads a directory whose tokenizer_config.json names
# TokenizersBackend with that class (some others, e.g. qwen2, get a class of their own).
_TOKENIZERS_BACKEND_MODEL_TYPES = ("gpt2", "gpt_neox", "gptj", "roberta")


def load_tokenizer(name_or_path: str):
    """`AutoTokenizer.from_pretrained(name_or_path)`, with "tiny" meaning `dpo_jax/assets/tiny_tokenizer`
    (a TokenizersBackend directory: the class AutoTokenizer would pick, without its torch import)."""
    source = str(TINY_TOKENIZER_DIR) if name_or_path == TINY_ALIAS else name_or_path
    try:
        tokenizer = pretrained_tokenizer(source)
    except (OSError, ValueError) as error:  # no such directory, no hub, not a tokenizer
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"tokenizer {name_or_path!r} cannot be loaded ({reason}); pass a local tokenizer directory "
            "(--config.tokenizer=DIR) or 'tiny' (the tokenizer shipped with dpo_jax, as a config's :tiny "
            "variant does)"
        ) from error
    if tokenizer.eos_token_id is None:
        raise UserError(f"tokenizer {name_or_path!r} has no EOS token, which every response must end with")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pretrained_tokenizer(source: str):
    """`AutoTokenizer.from_pretrained(source)`, by `TokenizersBackend` itself where AutoTokenizer would
    pick that class (module docstring)."""
    if _is_tokenizers_backend_dir(source):
        from transformers import TokenizersBackend

        return TokenizersBackend.from_pretrained(source)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def _is_tokenizers_backend_dir(source: str) -> bool:
    """Whether AutoTokenizer would load `source` as a plain `TokenizersBackend`: a local directory whose
    tokenizer_config.json names that class (no custom code) beside no config.json or a model's whose
    type AutoTokenizer gives no tokenizer class of its own over it."""
    if not os.path.isdir(source):
        return False
    try:
        with open(os.path.join(source, "tokenizer_config.json")) as f:
            tokenizer_config = json.load(f)
        model_type = None
        if os.path.exists(os.path.join(source, "config.json")):
            with open(os.path.join(source, "config.json")) as f:
                model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):  # missing or unreadable: AutoTokenizer says why
        return False
    return (
        isinstance(tokenizer_config, dict)
        and tokenizer_config.get("tokenizer_class") == "TokenizersBackend"
        and "auto_map" not in tokenizer_config
        and model_type in (None, *_TOKENIZERS_BACKEND_MODEL_TYPES)
    )


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that changes token ids: the vocabulary and merges, special tokens, template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        vocabulary = backend.to_str()
    else:
        vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()))
    identity = {
        "class": type(tokenizer).__name__,
        "vocabulary": hashlib.sha256(vocabulary.encode()).hexdigest(),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
