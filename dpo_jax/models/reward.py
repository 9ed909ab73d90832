"""A causal-LM body with a scalar head: the reward model of RLHF, and PPO's value model.

`ScalarHeadModel(config).apply({"params": p}, input_ids, attention_mask)` returns one float32 value per
position, [B, L]: the final hidden state (after the last layer norm) times a [D] vector, no bias, as
transformers' `GPT2ForSequenceClassification` / `GPTNeoXForSequenceClassification` /
`GPTJForSequenceClassification` with num_labels=1 compute it. Params are `{"body": <the GPT-2 / GPT-NeoX /
GPT-J params without any vocabulary head>, "score":
{"kernel": [D]}}`, so a reward model starts from an SFT policy by taking its params as the body.

The score of a sequence is the value at its LAST REAL TOKEN, found from the attention mask
(`sequence_scores`): with right padding the last 1 of the mask, with left padding the last column.
The trainer's sequences are prompt + response + EOS (dpo_jax.data.tokenization), so a reward model
of ours scores a (prompt, response) at its EOS; `reward_model_input_ids` builds exactly those ids
for scoring texts later (the judges, Best-of-N), and the export records it (`SCORE_AT_EOS`).

Transformers finds the pooled token from the ids instead: the rightmost token that is not
`pad_token_id`. With pad == eos (GPT-2, Pythia) it would read the token BEFORE the trailing EOS,
so `export_reward_model` (the trainer's export) gives the model a pad token of its own, an id no
text encodes to (appended to the vocabulary when the tokenizer has no spare id), and transformers
then pools the EOS: `tokenizer(prompt, response + tokenizer.eos_token)` gives the trainer's ids.
"""

from __future__ import annotations

import copy
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dpo_jax.models.build import model_class
from dpo_jax.models.config import ModelConfig, as_dtype, from_hf_config, hf_config_dict
from dpo_jax.models.hf_io import (
    EXPORT_MARKER,
    convert_hf_state_dict,
    export_hf_state_dict,
    hf_num_labels,
    read_hf_config,
    read_state_dict,
    write_hf_config,
)
from dpo_jax.models.layers import INIT_STD

BODY = "body"
HEAD = "score"
# What `dpo_jax_export.json` says about where the score is read: at the EOS the trainer appends.
SCORE_AT_EOS = "eos"
# The pad token an export adds when the tokenizer pads with EOS (see the module docstring).
REWARD_PAD_TOKEN = "<|dpo_jax_reward_pad|>"
_EMBEDDING_TENSORS = {
    "gpt2": "transformer.wte.weight",
    "gpt_neox": "gpt_neox.embed_in.weight",
    "gptj": "transformer.wte.weight",
}
_HF_CLASSES = {
    "gpt2": "GPT2ForSequenceClassification",
    "gpt_neox": "GPTNeoXForSequenceClassification",
    "gptj": "GPTJForSequenceClassification",
}


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
    """A language model's params without its vocabulary head (GPT-NeoX's and GPT-J's untied `embed_out`)."""
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


def reward_model_input_ids(tokenizer, prompts, responses, *, max_length: int) -> list[list[int]]:
    """The ids the trainer scores for each (prompt, response) text: prompt ids + response ids + EOS,
    each text encoded on its own without special tokens (as `dpo_jax.data.tokenization` does).
    Longer than `max_length`: the prompt loses its start first, then the response its end."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        return []
    encode = lambda texts: tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]  # noqa: E731
    out = []
    for prompt, response in zip(encode(prompts), encode(responses)):
        response = list(response)
        while response and response[-1] == tokenizer.eos_token_id:  # a text that kept its EOS: one EOS
            response.pop()
        response = (response + [tokenizer.eos_token_id])[:max_length]
        keep = max_length - len(response)
        out.append((list(prompt)[-keep:] if keep else []) + response)
    return out


def export_reward_model(
    model: ScalarHeadModel, params, out_dir: str, *, tokenizer=None, pad_id=None, eos_id=None, dtype="float32"
):
    """The trainer's export: transformers pools the EOS the trainer scored (module docstring).

    The tokenizer's pad id when it is not an EOS id; else a copy of the tokenizer with a pad token of its
    own (`REWARD_PAD_TOKEN`). Without a tokenizer and with pad == eos no pad id is exported (transformers
    then reads the last column, right for one sequence or left padding)."""
    eos_ids = {hf_eos_id(model.config), eos_id} | (
        {tokenizer.eos_token_id} if tokenizer is not None else set()
    )
    pad = tokenizer.pad_token_id if tokenizer is not None else pad_id
    if pad in eos_ids or pad is None:
        if tokenizer is None:
            pad = None
        else:
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.add_special_tokens({"pad_token": REWARD_PAD_TOKEN})
            pad = tokenizer.pad_token_id
    return to_hf_reward_model(
        model, params, out_dir, pad_token_id=pad, dtype=dtype, tokenizer=tokenizer, score_at=SCORE_AT_EOS
    )


def to_hf_reward_model(
    model: ScalarHeadModel,
    params,
    out_dir: str,
    *,
    pad_token_id: int | None,
    allow_pad_equal_eos: bool = False,
    dtype="float32",
    tokenizer=None,
    score_at: str | None = None,
) -> str:
    """A directory `transformers.AutoModelForSequenceClassification.from_pretrained` loads (num_labels=1)
    with the scores `sequence_scores` gives, for batches whose pad id never ends a real sequence.

    A pad id past the vocabulary (a pad token added for the export) gets a zero embedding row: padded
    positions are masked, so its value never reaches a score. `score_at` is recorded for the judges."""
    from safetensors.numpy import save_file

    cfg = model.config
    if pad_token_id is not None and pad_token_id == hf_eos_id(cfg) and not allow_pad_equal_eos:
        raise ValueError(
            f"pad_token_id={pad_token_id} is also the EOS id: transformers would score the token before "
            "each trailing EOS, not the one dpo_jax scores; export another pad id (or allow_pad_equal_eos=True "
            "when no scored sequence ends with EOS)"
        )
    os.makedirs(out_dir, exist_ok=True)
    hf_config = hf_config_dict(cfg)
    hf_config["architectures"] = [_HF_CLASSES[cfg.arch]]
    if len(hf_config.get("id2label") or {}) != 1:  # one output, labelled as transformers labels it
        hf_config["id2label"] = {"0": "LABEL_0"}
        hf_config["label2id"] = {"LABEL_0": 0}
    hf_config.pop("num_labels", None)
    hf_config["pad_token_id"] = pad_token_id
    host = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), nn.meta.unbox(params))
    # The causal LM's tensor names ("transformer.*", "gpt_neox.*") are the classifier's too.
    state = export_hf_state_dict(cfg, host[BODY], dtype, body_only=True)
    if pad_token_id is not None and pad_token_id >= cfg.vocab_size:
        name = _EMBEDDING_TENSORS[cfg.arch]
        state[name] = np.pad(state[name], ((0, pad_token_id + 1 - cfg.vocab_size), (0, 0)))
        hf_config["vocab_size"] = pad_token_id + 1
    write_hf_config(hf_config, out_dir)
    state["score.weight"] = np.asarray(host[HEAD], np.float32).reshape(1, -1).astype(as_dtype(dtype))
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, EXPORT_MARKER), "w") as f:
        json.dump(
            {"arch": cfg.arch, "head": "reward", "dtype": str(as_dtype(dtype)), "score_at": score_at}, f
        )
    return out_dir


def export_score_position(directory: str) -> str | None:
    """Where a reward-model directory's scores are read: SCORE_AT_EOS for the trainer's exports, None
    for other models (scored at the last token of what their tokenizer makes of the text pair)."""
    path = os.path.join(directory, EXPORT_MARKER)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f).get("score_at")


def from_hf_reward_model(directory: str, *, dtype="float32", param_dtype="float32", **overrides):
    """(ScalarHeadModel, host params) from a sequence-classification directory with num_labels=1."""
    state = read_state_dict(directory)
    if "score.weight" not in state:
        raise ValueError(f"{directory}: no score.weight; not a sequence-classification (reward) model")
    hf_config = read_hf_config(directory)
    if hf_num_labels(hf_config) != 1:
        raise ValueError(f"{directory}: num_labels={hf_num_labels(hf_config)}; a reward model has exactly 1")
    cfg = from_hf_config(hf_config, dtype=dtype, param_dtype=param_dtype, **overrides)
    head = np.asarray(state.pop("score.weight"), np.float32)
    if head.shape != (1, cfg.hidden_size):
        raise ValueError(f"{directory}: score.weight has shape {head.shape}, expected (1, {cfg.hidden_size})")
    body = convert_hf_state_dict(cfg, state, source=directory, body_only=True)
    return ScalarHeadModel(cfg), {BODY: body, HEAD: head[0].astype(as_dtype(param_dtype))}
