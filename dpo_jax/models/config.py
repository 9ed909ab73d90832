"""ModelConfig: the one description of a GPT-2, GPT-NeoX or GPT-J model that our Flax modules read.

It is built from a transformers `GPT2Config` / `GPTNeoXConfig` / `GPTJConfig` or its dict (so hub
checkpoints, local HF directories and tiny test models share one path) and turned back into one
(`hf_config_dict`: the config.json `to_hf` writes). Options
that only concern how we run the model (compute dtype, remat, attention kernel, scanned layers,
dropout) live here too; they never change the numbers a checkpoint means.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

ARCHITECTURES = ("gpt2", "gpt_neox", "gptj")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims", "save_matmuls_attention")
# Attention kernels (dpo_jax.models.attention); "auto" picks the platform's at trace time.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
# Activation names as transformers spells them; "gelu_new" is GPT-2's tanh approximation.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu")

# The embedding and the output head hold the vocabulary padded to a multiple of this (GPT-2's 50257 ->
# 50304), so that the vocabulary axis divides by any tensor-parallel size up to 128 and the head's
# matmul tiles evenly. The padded entries are zero on import, never exported, and the model cuts its
# logits back to vocab_size, so no log-prob, sample or export ever sees them.
VOCAB_PAD_MULTIPLE = 128

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(dtype: Any) -> jnp.dtype:
    """Accept 'bfloat16' / jnp.bfloat16 / np.dtype alike (configs carry strings)."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        return jnp.dtype(_DTYPES[dtype])
    return jnp.dtype(dtype)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_new"
    tie_word_embeddings: bool = True
    attention_bias: bool = True
    # GPT-2 only.
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    # GPT-NeoX only.
    rotary_pct: float = 0.25
    rotary_emb_base: float = 10000.0
    use_parallel_residual: bool = True
    # GPT-J only: the features of each head that are rotated (transformers' `rotary_dim`).
    gptj_rotary_dim: int | None = None
    # How we run it.
    dtype: Any = "float32"
    param_dtype: Any = "float32"
    dropout_rate: float = 0.0
    remat_policy: str = "none"
    attention: str = "auto"
    scan_layers: bool = False
    # The transformers config this came from (a plain dict), written back verbatim by to_hf so
    # that fields we do not model (token ids, architectures, ...) survive a round trip.
    hf_config: dict | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch {self.arch!r} is not supported; expected one of {ARCHITECTURES}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation {self.activation!r} is not supported; expected one of {ACTIVATIONS}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r}; expected one of {REMAT_POLICIES}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention {self.attention!r}; expected one of {ATTENTION_IMPLEMENTATIONS}")
        if self.scan_layers and self.scale_attn_by_inverse_layer_idx:
            raise ValueError(
                "scale_attn_by_inverse_layer_idx needs a static layer index: use scan_layers=False"
            )
        if self.arch == "gptj" and not (
            self.gptj_rotary_dim is not None and 0 < self.gptj_rotary_dim <= self.head_dim
        ):
            raise ValueError(
                f"gptj rotary_dim must be in (0, head_dim={self.head_dim}], got {self.gptj_rotary_dim}"
            )
        if not 0.0 < self.rotary_pct <= 1.0:
            raise ValueError(f"rotary_pct must be in (0, 1], got {self.rotary_pct}")
        if self.rotary_dim % 2:
            raise ValueError(f"rotary dimension {self.rotary_dim} must be even")
        as_dtype(self.dtype)
        as_dtype(self.param_dtype)

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and columns of the head: vocab_size rounded up to VOCAB_PAD_MULTIPLE."""
        return -(-self.vocab_size // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dim(self) -> int:
        """Features of each head that rotary embeddings rotate (GPT-NeoX and GPT-J; unused by GPT-2)."""
        if self.arch == "gptj":
            return self.gptj_rotary_dim
        return int(self.head_dim * self.rotary_pct)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return as_dtype(self.dtype)

    @property
    def weights_dtype(self) -> jnp.dtype:
        return as_dtype(self.param_dtype)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """All parameters (tied embeddings counted once), as the FLOP counts of the anchor use N."""
        d, f, v, layers = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        bias = 1 if self.attention_bias else 0
        per_layer = (2 if self.arch == "gptj" else 4) * d  # GPT-J's block has one layer norm, the others two
        per_layer += 3 * d * d + 3 * d * bias + d * d + d * bias  # qkv + output projection
        per_layer += 2 * d * f + f + d  # mlp
        total = layers * per_layer + v * d + 2 * d  # blocks + input embedding + final norm
        if self.arch == "gpt2":
            total += self.max_position_embeddings * d
        if not self.tie_word_embeddings:
            total += d * v
        if self.arch == "gptj":
            total += v  # the head's bias
        return total


def from_hf_config(hf_config: Any, **overrides) -> ModelConfig:
    """A transformers GPT2Config / GPTNeoXConfig / GPTJConfig (or its dict) -> ModelConfig.

    Settings we cannot reproduce exactly fail here, naming the field, rather than giving a model
    whose logits silently differ from the checkpoint's.
    """
    cfg = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    model_type = cfg.get("model_type")
    if model_type == "gpt2":
        if cfg.get("add_cross_attention"):
            raise ValueError("gpt2 config: add_cross_attention=True is not supported (decoder-only models)")
        d = cfg["n_embd"]
        fields = dict(
            arch="gpt2",
            vocab_size=cfg["vocab_size"],
            hidden_size=d,
            num_layers=cfg["n_layer"],
            num_heads=cfg["n_head"],
            intermediate_size=cfg.get("n_inner") or 4 * d,
            max_position_embeddings=cfg["n_positions"],
            layer_norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
            activation=cfg.get("activation_function", "gelu_new"),
            tie_word_embeddings=cfg.get("tie_word_embeddings", True),
            attention_bias=True,
            scale_attn_weights=cfg.get("scale_attn_weights", True),
            scale_attn_by_inverse_layer_idx=cfg.get("scale_attn_by_inverse_layer_idx", False),
        )
        if not fields["tie_word_embeddings"]:
            raise ValueError("gpt2 config: tie_word_embeddings=False is not supported (GPT-2 ties its head)")
    elif model_type == "gpt_neox":
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"gpt_neox config: rope_type {rope_type!r} is not supported (only 'default')")
        fields = dict(
            arch="gpt_neox",
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            intermediate_size=cfg["intermediate_size"],
            max_position_embeddings=cfg["max_position_embeddings"],
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),
            activation=cfg.get("hidden_act", "gelu"),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            attention_bias=cfg.get("attention_bias", True),
            rotary_pct=rope.get("partial_rotary_factor", cfg.get("rotary_pct", 0.25)),
            rotary_emb_base=rope.get("rope_theta", cfg.get("rotary_emb_base", 10000.0)),
            use_parallel_residual=cfg.get("use_parallel_residual", True),
        )
    elif model_type == "gptj":
        fields = _gptj_fields(cfg)
    else:
        raise ValueError(
            f"model_type {model_type!r} is not supported; dpo_jax has Flax models for {ARCHITECTURES}"
        )
    fields.update(overrides)
    return ModelConfig(hf_config=cfg, **fields)


def _gptj_fields(cfg: dict) -> dict:
    d, heads = cfg["n_embd"], cfg["n_head"]
    rotary_dim = cfg.get("rotary_dim")
    if rotary_dim is None:
        # transformers then rotates hidden_size features of each head: it runs only with one head.
        if heads != 1:
            raise ValueError("gptj config: rotary_dim=None is not supported with n_head > 1; set rotary_dim")
        rotary_dim = d
    if cfg.get("tie_word_embeddings", False):
        raise ValueError("gptj config: tie_word_embeddings=True is not supported (GPT-J has its own lm_head)")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"gptj config: rope scaling {rope} is not supported")
    return dict(
        arch="gptj",
        vocab_size=cfg["vocab_size"],
        hidden_size=d,
        num_layers=cfg["n_layer"],
        num_heads=heads,
        intermediate_size=cfg.get("n_inner") or 4 * d,
        max_position_embeddings=cfg["n_positions"],
        layer_norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        activation=cfg.get("activation_function", "gelu_new"),
        tie_word_embeddings=False,
        attention_bias=False,
        gptj_rotary_dim=rotary_dim,
    )


# The class each architecture's causal LM is in transformers, and the values its config class gives
# the fields we do not model: `hf_config_dict` writes them, so that a config.json read back without
# transformers (`hf_io.read_hf_config`) has what `from_pretrained` would fill in (e.g. GPT-NeoX's EOS
# id 2), as `save_pretrained` wrote them.
HF_CAUSAL_LM_CLASSES = {
    "gpt2": "GPT2LMHeadModel",
    "gpt_neox": "GPTNeoXForCausalLM",
    "gptj": "GPTJForCausalLM",
}
_HF_CLASS_DEFAULTS = {
    "gpt2": dict(
        add_cross_attention=False,
        attn_pdrop=0.1,
        bos_token_id=50256,
        embd_pdrop=0.1,
        eos_token_id=50256,
        initializer_range=0.02,
        pad_token_id=None,
        reorder_and_upcast_attn=False,
        resid_pdrop=0.1,
        summary_activation=None,
        summary_first_dropout=0.1,
        summary_proj_to_labels=True,
        summary_type="cls_index",
        summary_use_proj=True,
        use_cache=True,
    ),
    "gpt_neox": dict(
        attention_dropout=0.0,
        bos_token_id=0,
        classifier_dropout=0.1,
        eos_token_id=2,
        hidden_dropout=0.0,
        initializer_range=0.02,
        is_decoder=False,
        pad_token_id=None,
        use_cache=True,
    ),
    "gptj": dict(
        attn_pdrop=0.0,
        bos_token_id=50256,
        embd_pdrop=0.0,
        eos_token_id=50256,
        initializer_range=0.02,
        pad_token_id=None,
        resid_pdrop=0.0,
        use_cache=True,
    ),
}


def hf_config_dict(config: ModelConfig) -> dict:
    """ModelConfig -> the complete config.json of its transformers causal LM (model_type and
    architectures included), built without importing transformers (whose config classes import torch).

    The fields of the config it came from (`config.hf_config`) are kept; those we model are ours."""
    base = dict(config.hf_config or {})
    for key in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
        base.pop(key, None)
    for key, value in _HF_CLASS_DEFAULTS[config.arch].items():
        base.setdefault(key, value)
    if config.arch in ("gpt2", "gptj"):
        base.update(
            vocab_size=config.vocab_size,
            n_embd=config.hidden_size,
            n_layer=config.num_layers,
            n_head=config.num_heads,
            n_inner=config.intermediate_size,
            n_positions=config.max_position_embeddings,
            layer_norm_epsilon=config.layer_norm_eps,
            activation_function=config.activation,
        )
        if config.arch == "gpt2":
            base.update(
                scale_attn_weights=config.scale_attn_weights,
                scale_attn_by_inverse_layer_idx=config.scale_attn_by_inverse_layer_idx,
                tie_word_embeddings=True,
            )
        else:
            base.update(rotary_dim=config.rotary_dim, tie_word_embeddings=False)
    else:
        base.update(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            layer_norm_eps=config.layer_norm_eps,
            hidden_act=config.activation,
            tie_word_embeddings=config.tie_word_embeddings,
            attention_bias=config.attention_bias,
            use_parallel_residual=config.use_parallel_residual,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": config.rotary_emb_base,
                "partial_rotary_factor": config.rotary_pct,
            },
        )
        for legacy in ("rotary_pct", "rotary_emb_base", "rope_scaling"):
            base.pop(legacy, None)
    base["model_type"] = config.arch
    if not base.get("architectures"):  # also a transformers config object's None
        base["architectures"] = [HF_CAUSAL_LM_CLASSES[config.arch]]
    return base


def to_hf_config(config: ModelConfig):
    """ModelConfig -> a transformers config object that `from_pretrained` understands (`hf_config_dict`'s)."""
    import transformers

    fields = hf_config_dict(config)
    classes = {
        "gpt2": transformers.GPT2Config,
        "gpt_neox": transformers.GPTNeoXConfig,
        "gptj": transformers.GPTJConfig,
    }
    return classes[fields.pop("model_type")](**fields)
