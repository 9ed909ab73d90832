"""Published GPT-2 / Pythia / GPT-J architectures as Hugging Face config dicts, for random-init benchmarks.

`MODEL_PRESETS[name]` is a dict that `configs.common` accepts as `model.random_init_config` (with
`model.name_or_path = "random"`), so a benchmark builds the real architecture without downloading
weights. The hyperparameters are those of the hub configs (openai-community/gpt2, gpt2-large,
EleutherAI/pythia-410m, -1.4b, -2.8b, EleutherAI/gpt-j-6b) and, for GPT-2 and Pythia, exactly those that
the performance anchor builds, so both count the same N. `tiny` is the anchor's tiny GPT-2 (vocab 50257),
small enough for a CPU. `HUB_ARCHITECTURES` names fine-tunes by the architecture they share
(CarperAI/openai_summarize_tldr_sft, the paper's TL;DR SFT model, is a GPT-J-6B).

N counts every parameter once, tied embeddings once (GPT-2 ties its output head to `wte`, Pythia
does not), as torch's `model.parameters()` does in the anchor.
"""

from __future__ import annotations

from typing import Any

GPT2_VOCAB = 50257
PYTHIA_VOCAB = 50304  # 50277 tokens padded to a multiple of 128 in the released checkpoints
GPTJ_VOCAB = 50400  # GPT-2's 50257 tokens, the head and embedding padded to 50400 in the released model


def _gpt2(n_layer: int, n_embd: int, n_head: int) -> dict[str, Any]:
    return dict(
        model_type="gpt2",
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=1024,
        vocab_size=GPT2_VOCAB,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        bos_token_id=50256,
        eos_token_id=50256,
    )


def _pythia(layers: int, hidden: int, heads: int) -> dict[str, Any]:
    return dict(
        model_type="gpt_neox",
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=2048,
        vocab_size=PYTHIA_VOCAB,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )


def _gptj(layers: int, hidden: int, heads: int, rotary_dim: int) -> dict[str, Any]:
    return dict(
        model_type="gptj",
        n_layer=layers,
        n_embd=hidden,
        n_head=heads,
        rotary_dim=rotary_dim,
        n_positions=2048,
        vocab_size=GPTJ_VOCAB,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=False,
        bos_token_id=50256,
        eos_token_id=50256,
    )


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _gpt2(n_layer=2, n_embd=64, n_head=4),
    "gpt2": _gpt2(n_layer=12, n_embd=768, n_head=12),
    "gpt2-large": _gpt2(n_layer=36, n_embd=1280, n_head=20),
    "pythia-410m": _pythia(layers=24, hidden=1024, heads=16),
    "pythia-1.4b": _pythia(layers=24, hidden=2048, heads=16),
    "pythia-2.8b": _pythia(layers=32, hidden=2560, heads=32),
    "gpt-j-6b": _gptj(layers=28, hidden=4096, heads=16, rotary_dim=64),
}

# Hub models known by their architecture alone (lower-case names): fine-tunes of a preset.
HUB_ARCHITECTURES = {"carperai/openai_summarize_tldr_sft": "gpt-j-6b"}

# Sequence classifiers the evaluations score with, by architecture (hub config values), and the hub
# names known to have them: `models.loading.describe_scorer` compiles a scorer ahead of time without
# downloading it. siebert/sentiment-roberta-large-english is the paper's IMDb ground-truth reward.
CLASSIFIER_PRESETS: dict[str, dict[str, Any]] = {
    "roberta-large": dict(
        model_type="roberta",
        vocab_size=50265,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
    ),
}
CLASSIFIER_ARCHITECTURES = {"siebert/sentiment-roberta-large-english": "roberta-large"}

# The tokenizer each architecture was released with; nothing loads it in a benchmark (token ids are
# synthetic), but a run config names one.
PRESET_TOKENIZERS = {
    "tiny": "gpt2",
    "gpt2": "gpt2",
    "gpt2-large": "gpt2",
    "pythia-410m": "EleutherAI/pythia-410m",
    "pythia-1.4b": "EleutherAI/pythia-1.4b",
    "pythia-2.8b": "EleutherAI/pythia-2.8b",
    "gpt-j-6b": "EleutherAI/gpt-j-6b",
}


# The tiny random models of the configs' `:tiny` variants and the tests: vocab 512 = the shipped tiny
# tokenizer, small enough that a whole training run takes seconds on a CPU.
TINY_MODELS = {
    "gpt2": {
        **_gpt2(n_layer=2, n_embd=64, n_head=4),
        "n_positions": 128,
        "vocab_size": 512,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
    "gpt_neox": {**_pythia(layers=2, hidden=64, heads=4), "max_position_embeddings": 128, "vocab_size": 512},
    # rotary_dim 8 of 16 features per head: partial rotation, as GPT-J-6B's 64 of 256.
    "gptj": {
        **_gptj(layers=2, hidden=64, heads=4, rotary_dim=8),
        "n_positions": 128,
        "vocab_size": 512,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
}


def preset(name: str) -> dict[str, Any]:
    """A fresh copy of the preset's Hugging Face config dict."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(MODEL_PRESETS)}")
    return dict(MODEL_PRESETS[name])
