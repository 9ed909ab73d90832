"""Flax GPT-2, GPT-NeoX (Pythia) and GPT-J language models and their Hugging Face import/export; the reward
head on them (reward.py) and a RoBERTa sequence classifier (roberta.py, the paper's sentiment reward).

model, params = from_hf("EleutherAI/pythia-410m", dtype="bfloat16")   # or a local HF directory
logits = model.apply({"params": params}, input_ids, attention_mask=mask)   # [B, L, V]
to_hf(model, params, "/tmp/export")   # loads with AutoModelForCausalLM.from_pretrained
classifier, params = from_hf("siebert/sentiment-roberta-large-english")   # logits [B, num_labels]
"""

from __future__ import annotations

from dpo_jax.models.attention import RightPadded
from dpo_jax.models.build import (
    abstract_params,
    build_model,
    init_cache,
    init_fn,
    init_params,
)
from dpo_jax.models.config import ModelConfig, from_hf_config, hf_config_dict, to_hf_config
from dpo_jax.models.gpt2 import GPT2LMHeadModel
from dpo_jax.models.gpt_neox import GPTNeoXForCausalLM
from dpo_jax.models.gptj import GPTJForCausalLM
from dpo_jax.models.hf_io import from_hf, to_hf
from dpo_jax.models.roberta import RobertaForSequenceClassification

__all__ = [
    "ModelConfig",
    "GPT2LMHeadModel",
    "GPTJForCausalLM",
    "GPTNeoXForCausalLM",
    "RightPadded",
    "RobertaForSequenceClassification",
    "abstract_params",
    "build_model",
    "from_hf",
    "from_hf_config",
    "hf_config_dict",
    "init_cache",
    "init_fn",
    "init_params",
    "to_hf",
    "to_hf_config",
]
