"""RoBERTa sequence classifier in Flax linen: the paper's IMDb sentiment reward
(`siebert/sentiment-roberta-large-english`, RoBERTa-large) without torch.

    model, params = dpo_jax.models.from_hf(PATH)          # a RobertaForSequenceClassification directory
    logits = model.apply({"params": params}, input_ids, attention_mask=mask)   # [B, num_labels]

What makes it RoBERTa rather than BERT: position ids count only non-pad tokens and start after the pad
id (the first real token sits at `pad_token_id + 1`, pads keep position `pad_token_id`), so the model
takes `max_position_embeddings - pad_token_id - 1` tokens (`max_sequence_length`); the embeddings are
word + position + token type (one type) under a layer norm; every block is post-LN (norm after each
residual add); the head reads the first token (<s>) through dense -> tanh -> out_proj. Attention is
bidirectional over the tokens the mask marks (`models.attention.encoder_attention`: cuDNN's fused
kernel on GPUs in bf16). Layer norms and the classification head run in fp32, the rest in `dtype`.

`roberta_from_hf_state` maps transformers' tensors by name (strict about missing, surplus and shapes,
as `hf_io` is for GPT-2 / GPT-NeoX); every parameter carries logical axis names for `dpo_jax.sharding`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dpo_jax.models.attention import encoder_attention
from dpo_jax.models.config import as_dtype
from dpo_jax.models.layers import Embed, LayerNorm, Linear, activation_fn

ATTENTION_CHOICES = ("auto", "xla", "cudnn")  # `encoder_attention`'s: auto = cuDNN on GPUs in bf16 / fp16

# Tensors a RoBERTa checkpoint may carry that the classifier does not use: the position-id buffer and
# the pooler of RobertaModel (the classification head has its own dense layer on <s>).
_UNUSED_PREFIXES = ("roberta.pooler.",)
_UNUSED_SUFFIXES = ("position_ids",)


@dataclasses.dataclass(frozen=True)
class RobertaConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    pad_token_id: int
    num_labels: int
    layer_norm_eps: float = 1e-5
    activation: str = "gelu"
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    attention: str = "auto"
    hf_config: dict | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        activation_fn(self.activation)
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention={self.attention!r}: expected one of {', '.join(ATTENTION_CHOICES)}")
        as_dtype(self.dtype)
        as_dtype(self.param_dtype)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_sequence_length(self) -> int:
        """Tokens per sequence: positions start after the pad id."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @property
    def compute_dtype(self):
        return as_dtype(self.dtype)

    @property
    def weights_dtype(self):
        return as_dtype(self.param_dtype)


def roberta_config_from_hf(hf_config: Any, **overrides) -> RobertaConfig:
    """A transformers RobertaConfig (or its dict) -> RobertaConfig; what we cannot reproduce fails here."""
    cfg = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    if cfg.get("model_type") != "roberta":
        raise ValueError(f"model_type {cfg.get('model_type')!r} is not roberta")
    position_type = cfg.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"roberta config: position_embedding_type {position_type!r} is not supported")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise ValueError("roberta config: decoder / cross-attention models are not supported (encoders only)")
    labels = cfg.get("id2label") or {}
    fields = dict(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        max_position_embeddings=cfg["max_position_embeddings"],
        type_vocab_size=cfg.get("type_vocab_size", 1),
        pad_token_id=cfg.get("pad_token_id", 1),
        num_labels=len(labels) or cfg.get("num_labels", 2),
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
        activation=cfg.get("hidden_act", "gelu"),
    )
    fields.update(overrides)
    return RobertaConfig(hf_config=cfg, **fields)


def roberta_position_ids(input_ids, pad_token_id: int):
    """pad_token_id + 1, + 2, ... over the non-pad tokens; pads keep pad_token_id."""
    real = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=-1) * real + pad_token_id


class RobertaLayer(nn.Module):
    config: RobertaConfig

    @nn.compact
    def __call__(self, hidden, attention_mask):
        cfg = self.config
        h, hd, d, f = cfg.num_heads, cfg.head_dim, cfg.hidden_size, cfg.intermediate_size
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        q, k, v = (
            Linear((d, h, hd), ("embed", "heads", "kv"), name=name, **kw)(hidden)
            for name in ("query", "key", "value")
        )
        attended = encoder_attention(q, k, v, attention_mask, scale=hd**-0.5, implementation=cfg.attention)
        out = Linear((h, hd, d), ("heads", "kv", "embed"), num_contract=2, name="attention_output", **kw)(
            attended
        )
        hidden = LayerNorm(cfg.layer_norm_eps, name="attention_norm", **kw)(hidden + out)
        x = Linear((d, f), ("embed", "mlp"), name="intermediate", **kw)(hidden)
        x = Linear((f, d), ("mlp", "embed"), name="output", **kw)(activation_fn(cfg.activation)(x))
        return LayerNorm(cfg.layer_norm_eps, name="output_norm", **kw)(hidden + x)


class RobertaForSequenceClassification(nn.Module):
    """(input_ids [B, L], attention_mask [B, L] or None = all ones) -> float32 logits [B, num_labels]."""

    config: RobertaConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        cfg = self.config
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        d = cfg.hidden_size
        # The vocabulary axis stays whole: RoBERTa's 50265 entries divide by no tensor-parallel size.
        hidden = Embed(cfg.vocab_size, d, (None, "embed"), name="word_embeddings", **kw)(input_ids)
        positions = roberta_position_ids(input_ids, cfg.pad_token_id)
        hidden += Embed(cfg.max_position_embeddings, d, (None, "embed"), name="position_embeddings", **kw)(
            positions
        )
        hidden += Embed(cfg.type_vocab_size, d, (None, "embed"), name="token_type_embeddings", **kw)(
            token_type_ids
        )
        hidden = LayerNorm(cfg.layer_norm_eps, name="embeddings_norm", **kw)(hidden)
        hidden = nn.with_logical_constraint(
            hidden, ("activation_batch", "activation_length", "activation_embed")
        )
        for i in range(cfg.num_layers):
            hidden = RobertaLayer(cfg, name=f"layers_{i}")(hidden, attention_mask)
        # The head runs in float32 whatever the compute dtype (as the reward models' does): a score is
        # a difference of logits, which bf16's 8 bits would quantise.
        head = dict(dtype=jnp.float32, param_dtype=cfg.weights_dtype)
        first = hidden[:, 0].astype(jnp.float32)
        x = jnp.tanh(Linear((d, d), ("embed", "mlp"), name="classifier_dense", **head)(first))
        return Linear((d, cfg.num_labels), ("mlp", None), name="classifier_out", **head)(x)


def _tensor_map(cfg: RobertaConfig) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], Any]]:
    """HF name -> (our path, HF shape, HF array -> ours). torch Linear weights are [out, in]."""
    d, h, hd, f, n = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size, cfg.num_labels
    same = lambda x: x  # noqa: E731

    def norm(hf_prefix, path):
        return {
            f"{hf_prefix}.weight": ((*path, "scale"), (d,), same),
            f"{hf_prefix}.bias": ((*path, "bias"), (d,), same),
        }

    out = {
        "roberta.embeddings.word_embeddings.weight": (
            ("word_embeddings", "embedding"),
            (cfg.vocab_size, d),
            same,
        ),
        "roberta.embeddings.position_embeddings.weight": (
            ("position_embeddings", "embedding"),
            (cfg.max_position_embeddings, d),
            same,
        ),
        "roberta.embeddings.token_type_embeddings.weight": (
            ("token_type_embeddings", "embedding"),
            (cfg.type_vocab_size, d),
            same,
        ),
        **norm("roberta.embeddings.LayerNorm", ("embeddings_norm",)),
        "classifier.dense.weight": (("classifier_dense", "kernel"), (d, d), lambda x: x.T),
        "classifier.dense.bias": (("classifier_dense", "bias"), (d,), same),
        "classifier.out_proj.weight": (("classifier_out", "kernel"), (n, d), lambda x: x.T),
        "classifier.out_proj.bias": (("classifier_out", "bias"), (n,), same),
    }
    for i in range(cfg.num_layers):
        hf, ours = f"roberta.encoder.layer.{i}.", (f"layers_{i}",)
        for name in ("query", "key", "value"):
            out[f"{hf}attention.self.{name}.weight"] = (
                (*ours, name, "kernel"),
                (d, d),
                lambda x: x.T.reshape(d, h, hd),
            )
            out[f"{hf}attention.self.{name}.bias"] = ((*ours, name, "bias"), (d,), lambda x: x.reshape(h, hd))
        out[f"{hf}attention.output.dense.weight"] = (
            (*ours, "attention_output", "kernel"),
            (d, d),
            lambda x: x.T.reshape(h, hd, d),
        )
        out[f"{hf}attention.output.dense.bias"] = ((*ours, "attention_output", "bias"), (d,), same)
        out.update(norm(f"{hf}attention.output.LayerNorm", (*ours, "attention_norm")))
        out[f"{hf}intermediate.dense.weight"] = ((*ours, "intermediate", "kernel"), (f, d), lambda x: x.T)
        out[f"{hf}intermediate.dense.bias"] = ((*ours, "intermediate", "bias"), (f,), same)
        out[f"{hf}output.dense.weight"] = ((*ours, "output", "kernel"), (d, f), lambda x: x.T)
        out[f"{hf}output.dense.bias"] = ((*ours, "output", "bias"), (d,), same)
        out.update(norm(f"{hf}output.LayerNorm", (*ours, "output_norm")))
    return out


def roberta_from_hf_state(hf_config: Any, state_dict: dict, *, source: str = "state dict", **overrides):
    """(RobertaForSequenceClassification, host params) from a checkpoint's tensors (numpy)."""
    cfg = roberta_config_from_hf(hf_config, **overrides)
    tensors = dict(state_dict)
    params: dict = {}
    dtype = as_dtype(cfg.param_dtype)
    for name, (path, shape, to_ours) in _tensor_map(cfg).items():
        if name not in tensors:
            raise ValueError(f"{source}: missing tensor {name!r} (expected shape {shape})")
        value = np.asarray(tensors.pop(name), np.float32)
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(value.shape)}, expected {shape} for a roberta "
                f"model with hidden_size={cfg.hidden_size}, num_labels={cfg.num_labels}"
            )
        tree = params
        for key in path[:-1]:
            tree = tree.setdefault(key, {})
        tree[path[-1]] = np.asarray(to_ours(value)).astype(dtype)
    surplus = sorted(
        k for k in tensors if not (k.startswith(_UNUSED_PREFIXES) or k.endswith(_UNUSED_SUFFIXES))
    )
    if surplus:
        raise ValueError(f"{source}: unexpected tensors for a roberta sequence classifier: {surplus[:10]}")
    return RobertaForSequenceClassification(cfg), params
