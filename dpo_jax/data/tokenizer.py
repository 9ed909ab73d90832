"""Loading the tokenizer (hub name, local directory, or "tiny" for the shipped one) and its identity.

The pad token is set to EOS when the tokenizer has none (GPT-2, Pythia): padding positions are told
apart by the masks the loader builds from structure, never by comparing ids with pad_id.
"""

from __future__ import annotations

import hashlib
import json

from dpo_jax import UserError
from dpo_jax.assets import TINY_TOKENIZER_DIR

TINY_ALIAS = "tiny"


def load_tokenizer(name_or_path: str):
    """`AutoTokenizer.from_pretrained(name_or_path)`, with "tiny" meaning `dpo_jax/assets/tiny_tokenizer`."""
    from transformers import AutoTokenizer

    source = str(TINY_TOKENIZER_DIR) if name_or_path == TINY_ALIAS else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
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
