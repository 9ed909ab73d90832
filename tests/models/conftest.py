"""Tiny random Hugging Face models that the model tests compare against (nothing is downloaded)."""

import numpy as np
import pytest
import torch
import transformers

VOCAB = 96


def make_hf_model(arch: str, **overrides):
    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = transformers.GPT2Config(
            n_layer=2,
            n_embd=32,
            n_head=4,
            vocab_size=VOCAB,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
            **overrides,
        )
        model = transformers.GPT2LMHeadModel(cfg)
    elif arch == "gptj":
        kw = dict(
            n_layer=2,
            n_embd=32,
            n_head=4,
            rotary_dim=4,  # of head_dim 8: partial rotation, as GPT-J-6B's 64 of 256
            vocab_size=VOCAB,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        )
        kw.update(overrides)
        model = transformers.GPTJForCausalLM(transformers.GPTJConfig(**kw))
    else:
        kw = dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=0,
        )
        kw.update(overrides)
        model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**kw))
    # Random init leaves biases and norms at 0 / 1: perturb them so the test sees every tensor.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "layernorm" in name or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


ARCH_SETTINGS = {
    "gpt2": ("gpt2", {}),
    "neox-parallel-rot0.25": ("gpt_neox", {"use_parallel_residual": True, "rotary_pct": 0.25}),
    "neox-parallel-rot1.0": ("gpt_neox", {"use_parallel_residual": True, "rotary_pct": 1.0}),
    "neox-sequential-rot0.25": ("gpt_neox", {"use_parallel_residual": False, "rotary_pct": 0.25}),
    "neox-sequential-rot1.0": ("gpt_neox", {"use_parallel_residual": False, "rotary_pct": 1.0}),
}


@pytest.fixture(params=sorted(ARCH_SETTINGS))
def hf_setting(request):
    arch, overrides = ARCH_SETTINGS[request.param]
    return request.param, make_hf_model(arch, **overrides)


def hf_logits(model, ids, attention_mask=None, position_ids=None) -> np.ndarray:
    with torch.no_grad():
        out = model(
            torch.tensor(ids),
            attention_mask=None if attention_mask is None else torch.tensor(attention_mask),
            position_ids=None if position_ids is None else torch.tensor(position_ids),
        )
    return out.logits.float().numpy()


def hf_params(model, **overrides):
    """Our (module, params) from a live HF model, through the same converter from_hf uses."""
    from dpo_jax.models import build_model, from_hf_config
    from dpo_jax.models.hf_io import convert_hf_state_dict

    cfg = from_hf_config(model.config, **overrides)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    return build_model(cfg), convert_hf_state_dict(cfg, state)


ROBERTA_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def make_hf_roberta(vocab_size: int = VOCAB, seed: int = 0, **overrides):
    """A tiny random RobertaForSequenceClassification (pad id 1, positions from 2, as RoBERTa's)."""
    torch.manual_seed(seed)
    kw = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=66,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        initializer_range=0.2,  # 10x the default: the <s> token's state then varies visibly with the text
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        id2label=ROBERTA_LABELS,
        label2id={v: k for k, v in ROBERTA_LABELS.items()},
    )
    kw.update(overrides)
    model = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**kw))
    with torch.no_grad():  # biases and norms start at 0 / 1: perturb them so the test sees every tensor
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
        model.classifier.out_proj.weight.normal_(0.0, 1.0)  # logits spread out, so p(positive) varies
    return model.eval()
