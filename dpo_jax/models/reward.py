"""A causal-LM body with a scalar head: the reward model of RLHF, and PPO's value model.

`ScalarHeadModel(config).apply({"params": p}, input_ids, attention_mask)` returns one float32 value per
position, [B, L]: the final hidden state (after the last layer norm) times a [D] vector, no bias, as
transformers' `GPT2ForSequenceClassification` / `GPTNeoXForSequenceClassification` with num_labels=1
compute it. Params are `{"body": <the GPT-2 / GPT-NeoX params without any vocabulary head>, "score":
{"kernel": [D]}}`, so a reward model starts from an SFT policy by taking its params as the body.

The score of a sequence is the value at its LAST REAL TOKEN, found from the attention mask
(`sequence_scores`): with right padding the last 1 of the mask, with left padding the last column.
Transformers finds it from the ids instead: the rightmost token that is not `pad_token_id`. The two
agree whenever the pad id does not end a real sequence; with pad == eos and responses that end with
EOS (the reference repo's tokenisation) transformers reads the token BEFORE the EOS, which is why
`to_hf_reward_model` refuses to export a pad id that is also the EOS id unless told to.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.models.build import model_class
from dpo_jax.models.config import ModelConfig, as_dtype, from_hf_config, to_hf_config
from dpo_jax.models.hf_io import convert_hf_state_dict, export_hf_state_dict, read_state_dict
from dpo_jax.models.layers import INIT_STD

BODY = "body"
HEAD = "score"
_HF_CLASSES = {"gpt2": "GPT2ForSequenceClassification", "gpt_neox": "GPTNeoXForSequenceClassification"}


class ScalarHeadModel(nn.Module):
    """Body -> final hidden states [B, L, D] -> float32 values [B, L] (see the module docstring)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, position_ids=None, *, deterministic: bool = True):
        body = model_class(self.config.arch)(self.config, name=BODY)
        hidden = body(
            input_ids, attention_mask, position_ids, deterministic=deterministic, return_hidden=True
        )
        kernel = self.param(
            HEAD,
            nn.with_logical_partitioning(nn.initializers.normal(INIT_STD), ("embed",)),
            (self.config.hidden_size,),
            self.config.weights_dtype,
        )
        # The head runs in float32 whatever the body's compute dtype: rewards are compared across
        # responses, and bf16 would quantise their differences.
        return jnp.einsum("bld,d->bl", hidden.astype(jnp.float32), kernel.astype(jnp.float32))


def last_real_index(attention_mask):
    """[B] index of each row's last position with attention_mask 1."""
    positions = jnp.arange(attention_mask.shape[-1])
    return jnp.max(jnp.where(attention_mask > 0, positions, -1), axis=-1)


def sequence_scores(values, attention_mask):
    """[B] the value at each row's last real token: the reward of the whole sequence."""
    index = last_real_index(attention_mask)
    return jnp.take_along_axis(values, jnp.maximum(index, 0)[:, None], axis=-1)[:, 0]


def body_params(lm_params: dict) -> dict:
    """A language model's params without its vocabulary head (GPT-NeoX's untied `embed_out`)."""
    return {name: value for name, value in lm_params.items() if name != "embed_out"}


def scalar_head_params(lm_params: dict, rng: jax.Array, *, hidden_size: int, zero_head: bool = False):
    """Params of a `ScalarHeadModel` whose body is a language model's (the reward model's and value
    model's usual start): head ~ normal(0.02) as transformers initialises it, or 0 (`zero_head`)."""
    body = body_params(lm_params)
    dtype = jax.tree.leaves(body)[0].dtype
    head = np.zeros(hidden_size, dtype) if zero_head else INIT_STD * jax.random.normal(rng, (hidden_size,))
    return {BODY: body, HEAD: np.asarray(head, dtype)}


def hf_eos_id(cfg: ModelConfig) -> int | None:
    """The EOS id the model's Hugging Face config names (None when it names none)."""
    return (cfg.hf_config or {}).get("eos_token_id")


def to_hf_reward_model(
    model: ScalarHeadModel,
    params,
    out_dir: str,
    *,
    pad_token_id: int | None,
    allow_pad_equal_eos: bool = False,
    dtype="float32",
    tokenizer=None,
) -> str:
    """A directory `transformers.AutoModelForSequenceClassification.from_pretrained` loads (num_labels=1)
    with the scores `sequence_scores` gives, for batches whose pad id never ends a real sequence."""
    from safetensors.numpy import save_file

    cfg = model.config
    if pad_token_id is not None and pad_token_id == hf_eos_id(cfg) and not allow_pad_equal_eos:
        raise ValueError(
            f"pad_token_id={pad_token_id} is also the EOS id: transformers would score the token before "
            "each trailing EOS, not the one dpo_jax scores; export another pad id (or allow_pad_equal_eos=True "
            "when no scored sequence ends with EOS)"
        )
    os.makedirs(out_dir, exist_ok=True)
    hf_config = to_hf_config(cfg)
    hf_config.architectures = [_HF_CLASSES[cfg.arch]]
    hf_config.num_labels = 1
    hf_config.pad_token_id = pad_token_id
    hf_config.save_pretrained(out_dir)
    host = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), nn.meta.unbox(params))
    # The causal LM's tensor names ("transformer.*", "gpt_neox.*") are the classifier's too.
    state = export_hf_state_dict(cfg, host[BODY], dtype, body_only=True)
    state["score.weight"] = np.asarray(host[HEAD], np.float32).reshape(1, -1).astype(as_dtype(dtype))
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "dpo_jax_export.json"), "w") as f:
        json.dump({"arch": cfg.arch, "head": "reward", "dtype": str(as_dtype(dtype))}, f)
    return out_dir


def from_hf_reward_model(directory: str, *, dtype="float32", param_dtype="float32", **overrides):
    """(ScalarHeadModel, host params) from a sequence-classification directory with num_labels=1."""
    import transformers

    state = read_state_dict(directory)
    if "score.weight" not in state:
        raise ValueError(f"{directory}: no score.weight; not a sequence-classification (reward) model")
    hf_config = transformers.AutoConfig.from_pretrained(directory)
    if getattr(hf_config, "num_labels", 1) != 1:
        raise ValueError(f"{directory}: num_labels={hf_config.num_labels}; a reward model has exactly 1")
    cfg = from_hf_config(hf_config, dtype=dtype, param_dtype=param_dtype, **overrides)
    head = np.asarray(state.pop("score.weight"), np.float32)
    if head.shape != (1, cfg.hidden_size):
        raise ValueError(f"{directory}: score.weight has shape {head.shape}, expected (1, {cfg.hidden_size})")
    body = convert_hf_state_dict(cfg, state, source=directory, body_only=True)
    return ScalarHeadModel(cfg), {BODY: body, HEAD: head[0].astype(as_dtype(param_dtype))}
