"""Hugging Face checkpoints both ways: `from_hf` (directory or hub name -> model, params) and `to_hf`.

Owns the tensor-by-tensor correspondence between transformers' state dicts and our Flax params.
Every tensor is checked against the shape the config implies; anything missing, surplus or of
the wrong shape fails with the tensor's name and both shapes, never a silently half-loaded model.
Weights stay on the host (numpy) until the caller places them, optionally straight onto a mesh.

Config files: our exports' config.json is complete (`config.hf_config_dict`) and read back with json;
any other goes through transformers' AutoConfig (`read_hf_config`), whose import costs every process
~2 s of torch, so training and sampling from our own exports never import it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from dpo_jax import MissingInputError
from dpo_jax.models.config import ModelConfig, as_dtype, from_hf_config, hf_config_dict

# Non-parameter buffers some checkpoints carry (causal-mask and rotary caches): safe to drop.
_IGNORED_SUFFIXES = (
    "attn.bias",
    "attn.masked_bias",
    "attention.bias",
    "attention.masked_bias",
    "inv_freq",
    "embed_positions",  # GPT-J's sin/cos table, in checkpoints saved before it stopped being persistent
)
_WEIGHT_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin*"]
# What every export of ours writes beside config.json (`to_hf`, `models.reward.to_hf_reward_model`).
EXPORT_MARKER = "dpo_jax_export.json"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One HF tensor <-> one Flax leaf. `path` is inside the layer for per-layer tensors."""

    hf_name: str
    path: tuple[str, ...]
    hf_shape: tuple[int, ...]
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _spec(hf_name, path, hf_shape, flax_shape=None, transpose=False, vocab_axis=None, padded_vocab=None):
    """A tensor that maps by an optional transpose ([out, in] torch Linear) and a reshape.

    `vocab_axis` (in our layout) is padded with zero rows to `padded_vocab` on import and cut back to
    the checkpoint's size on export, so the padding never leaves the model.
    """
    flax_shape = tuple(flax_shape or hf_shape)

    def to_flax(x):
        x = (x.T if transpose else x).reshape(flax_shape)
        if vocab_axis is None:
            return x
        widths = [(0, 0)] * x.ndim
        widths[vocab_axis] = (0, padded_vocab - x.shape[vocab_axis])
        return np.pad(x, widths)

    def to_hf(x):
        if vocab_axis is not None:
            x = np.take(x, np.arange(flax_shape[vocab_axis]), axis=vocab_axis)
        if transpose:
            return x.reshape(hf_shape[::-1]).T
        return x.reshape(hf_shape)

    return TensorSpec(hf_name, tuple(path), tuple(hf_shape), to_flax, to_hf)


def _vocab_rows(cfg: ModelConfig, axis: int) -> dict:
    return dict(vocab_axis=axis, padded_vocab=cfg.padded_vocab_size)


def _norm_specs(hf_prefix, path_prefix, d):
    return [
        _spec(f"{hf_prefix}.weight", (*path_prefix, "scale"), (d,)),
        _spec(f"{hf_prefix}.bias", (*path_prefix, "bias"), (d,)),
    ]


def _gpt2_specs(cfg: ModelConfig):
    d, h, hd, f = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
    top = [
        _spec("wte.weight", ("wte", "embedding"), (cfg.vocab_size, d), **_vocab_rows(cfg, 0)),
        _spec("wpe.weight", ("wpe", "embedding"), (cfg.max_position_embeddings, d)),
        *_norm_specs("ln_f", ("ln_f",), d),
    ]
    layer = [
        *_norm_specs("ln_1", ("ln_1",), d),
        *_norm_specs("ln_2", ("ln_2",), d),
        # Conv1D stores [in, out]; the fused output is q | k | v, each [heads, head_dim].
        _spec("attn.c_attn.weight", ("attn", "c_attn", "kernel"), (d, 3 * d), (d, 3, h, hd)),
        _spec("attn.c_attn.bias", ("attn", "c_attn", "bias"), (3 * d,), (3, h, hd)),
        _spec("attn.c_proj.weight", ("attn", "c_proj", "kernel"), (d, d), (h, hd, d)),
        _spec("attn.c_proj.bias", ("attn", "c_proj", "bias"), (d,)),
        _spec("mlp.c_fc.weight", ("mlp", "c_fc", "kernel"), (d, f)),
        _spec("mlp.c_fc.bias", ("mlp", "c_fc", "bias"), (f,)),
        _spec("mlp.c_proj.weight", ("mlp", "c_proj", "kernel"), (f, d)),
        _spec("mlp.c_proj.bias", ("mlp", "c_proj", "bias"), (d,)),
    ]
    return top, "h.{i}.", ("h",), layer


def _neox_qkv_spec(cfg: ModelConfig, bias: bool):
    d, h, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    if bias:
        return _spec(
            "attention.query_key_value.bias", ("attention", "query_key_value", "bias"), (3 * d,), (h, 3, hd)
        )
    # torch Linear [out=(heads, 3, head_dim), in] -> ours [in, heads, 3, head_dim].
    return TensorSpec(
        "attention.query_key_value.weight",
        ("attention", "query_key_value", "kernel"),
        (3 * d, d),
        lambda x: x.reshape(h, 3, hd, d).transpose(3, 0, 1, 2),
        lambda x: x.transpose(1, 2, 3, 0).reshape(3 * d, d),
    )


def _neox_specs(cfg: ModelConfig):
    d, h, hd, f, v = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size
    top = [
        _spec("gpt_neox.embed_in.weight", ("embed_in", "embedding"), (v, d), **_vocab_rows(cfg, 0)),
        *_norm_specs("gpt_neox.final_layer_norm", ("final_layer_norm",), d),
    ]
    if not cfg.tie_word_embeddings:
        top.append(
            _spec(
                "embed_out.weight",
                ("embed_out", "kernel"),
                (v, d),
                (d, v),
                transpose=True,
                **_vocab_rows(cfg, 1),
            )
        )
    layer = [
        *_norm_specs("input_layernorm", ("input_layernorm",), d),
        *_norm_specs("post_attention_layernorm", ("post_attention_layernorm",), d),
        _neox_qkv_spec(cfg, bias=False),
        _spec("attention.dense.weight", ("attention", "dense", "kernel"), (d, d), (h, hd, d), transpose=True),
        _spec("mlp.dense_h_to_4h.weight", ("mlp", "dense_h_to_4h", "kernel"), (f, d), (d, f), transpose=True),
        _spec("mlp.dense_h_to_4h.bias", ("mlp", "dense_h_to_4h", "bias"), (f,)),
        _spec("mlp.dense_4h_to_h.weight", ("mlp", "dense_4h_to_h", "kernel"), (d, f), (f, d), transpose=True),
        _spec("mlp.dense_4h_to_h.bias", ("mlp", "dense_4h_to_h", "bias"), (d,)),
    ]
    if cfg.attention_bias:
        layer += [
            _neox_qkv_spec(cfg, bias=True),
            _spec("attention.dense.bias", ("attention", "dense", "bias"), (d,)),
        ]
    return top, "gpt_neox.layers.{i}.", ("layers",), layer


def _gptj_specs(cfg: ModelConfig):
    d, h, hd, f, v = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size
    top = [
        _spec("transformer.wte.weight", ("wte", "embedding"), (v, d), **_vocab_rows(cfg, 0)),
        *_norm_specs("transformer.ln_f", ("ln_f",), d),
        _spec("lm_head.weight", ("embed_out", "kernel"), (v, d), (d, v), transpose=True, **_vocab_rows(cfg, 1)),
        _spec("lm_head.bias", ("embed_out", "bias"), (v,), **_vocab_rows(cfg, 0)),
    ]
    # torch Linear [out=(heads, head_dim), in] -> ours [in, heads, head_dim]; out_proj the other way.
    layer = [
        *_norm_specs("ln_1", ("ln_1",), d),
        *(
            _spec(f"attn.{name}.weight", ("attn", name, "kernel"), (d, d), (d, h, hd), transpose=True)
            for name in ("q_proj", "k_proj", "v_proj")
        ),
        _spec("attn.out_proj.weight", ("attn", "out_proj", "kernel"), (d, d), (h, hd, d), transpose=True),
        _spec("mlp.fc_in.weight", ("mlp", "fc_in", "kernel"), (f, d), (d, f), transpose=True),
        _spec("mlp.fc_in.bias", ("mlp", "fc_in", "bias"), (f,)),
        _spec("mlp.fc_out.weight", ("mlp", "fc_out", "kernel"), (d, f), (f, d), transpose=True),
        _spec("mlp.fc_out.bias", ("mlp", "fc_out", "bias"), (d,)),
    ]
    return top, "transformer.h.{i}.", ("h",), layer


_ARCH_SPECS = {"gpt2": _gpt2_specs, "gpt_neox": _neox_specs, "gptj": _gptj_specs}
# Where each architecture keeps its layers in our params (`CausalLM.stack_name`).
_STACK_KEYS = {"gpt2": "h", "gpt_neox": "layers", "gptj": "h"}


def tensor_specs(
    cfg: ModelConfig, *, body_only: bool = False
) -> list[tuple[TensorSpec, tuple[str, ...], int | None]]:
    """Every tensor of the checkpoint: (spec with the full HF name, Flax path, layer index or None).

    `body_only` leaves out the untied vocabulary head (`embed_out`): a sequence-classification
    checkpoint (reward model) has the body and a score head instead.
    """
    top, layer_prefix, stack_path, layer = _ARCH_SPECS[cfg.arch](cfg)
    out = [(s, s.path, None) for s in top if not (body_only and s.path[0] == "embed_out")]
    for i in range(cfg.num_layers):
        for s in layer:
            full = dataclasses.replace(s, hf_name=layer_prefix.format(i=i) + s.hf_name)
            out.append((full, (*stack_path, f"layers_{i}", *s.path), i))
    return out


def _canonical_name(cfg: ModelConfig, name: str) -> str:
    """Checkpoints differ in prefixes (gpt2 hub: 'h.0...'; saved by transformers: 'transformer.h.0...')."""
    if cfg.arch == "gpt2":
        return name.removeprefix("transformer.")
    if cfg.arch == "gptj":  # a bare GPTJModel's tensors lack the causal LM's "transformer." prefix
        return name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name
    if name == "lm_head.weight":
        return "embed_out.weight"
    return name if name.startswith(("gpt_neox.", "embed_out.")) else "gpt_neox." + name


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _stack_layers(cfg: ModelConfig, params: dict) -> dict:
    """Python-loop layout (layers_0 ...) -> scanned layout (one 'layers' entry, leading layer axis)."""
    import jax

    stack_key = _STACK_KEYS[cfg.arch]
    per_layer = [params[stack_key].pop(f"layers_{i}") for i in range(cfg.num_layers)]
    params[stack_key]["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *per_layer)
    return params


def _unstack_layers(cfg: ModelConfig, params: dict) -> dict:
    import jax

    stack_key = _STACK_KEYS[cfg.arch]
    stacked = params[stack_key]
    if "layers" not in stacked:
        return params
    out = dict(params)
    out[stack_key] = {
        f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], stacked["layers"]) for i in range(cfg.num_layers)
    }
    return out


def convert_hf_state_dict(
    cfg: ModelConfig, state_dict: dict[str, np.ndarray], source: str = "state dict", *, body_only: bool = False
) -> dict:
    """HF tensors (numpy) -> our params tree (numpy, param dtype). Strict about names and shapes.
    `body_only`: no vocabulary head expected (see `tensor_specs`)."""
    tensors = {_canonical_name(cfg, k): v for k, v in state_dict.items()}
    params: dict = {}
    dtype = as_dtype(cfg.param_dtype)
    for spec, path, _ in tensor_specs(cfg, body_only=body_only):
        if spec.hf_name not in tensors:
            raise ValueError(f"{source}: missing tensor {spec.hf_name!r} (expected shape {spec.hf_shape})")
        value = np.asarray(tensors.pop(spec.hf_name))
        if tuple(value.shape) != spec.hf_shape:
            raise ValueError(
                f"{source}: tensor {spec.hf_name!r} has shape {tuple(value.shape)}, expected {spec.hf_shape} "
                f"for a {cfg.arch} model with hidden_size={cfg.hidden_size}, num_heads={cfg.num_heads}, "
                f"vocab_size={cfg.vocab_size}"
            )
        _set(params, path, spec.to_flax(value).astype(dtype))
    if cfg.arch == "gpt2":
        tensors.pop("lm_head.weight", None)  # tied to wte
    surplus = sorted(k for k in tensors if not k.endswith(_IGNORED_SUFFIXES))
    if surplus:
        raise ValueError(f"{source}: unexpected tensors for a {cfg.arch} model: {surplus[:10]}")
    return _stack_layers(cfg, params) if cfg.scan_layers else params


def export_hf_state_dict(
    cfg: ModelConfig, params: Any, dtype: Any = "float32", *, body_only: bool = False
) -> dict[str, np.ndarray]:
    """Our params -> HF tensors under the names `save_pretrained` writes (`body_only`: no vocabulary head)."""
    params = _unstack_layers(cfg, _to_numpy_tree(params))
    out_dtype = as_dtype(dtype)
    prefix = "transformer." if cfg.arch == "gpt2" else ""
    state = {}
    for spec, path, _ in tensor_specs(cfg, body_only=body_only):
        value = np.asarray(_get(params, path), dtype=np.float32)
        state[prefix + spec.hf_name] = np.ascontiguousarray(spec.to_hf(value)).astype(out_dtype)
    return state


def _to_numpy_tree(params):
    import flax.linen as nn
    import jax

    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), nn.meta.unbox(params))


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
    """All tensors of a HF model directory: *.safetensors (sharded or not), else pytorch_model*.bin."""
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if files:
        from safetensors.numpy import load_file

        state = {}
        for path in files:
            state.update(load_file(path))
        return state
    bins = sorted(glob.glob(os.path.join(directory, "pytorch_model*.bin")))
    if bins:
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{directory} holds pytorch_model*.bin: reading it needs torch (pip install torch)"
            ) from e
        state = {}
        for path in bins:
            for name, t in torch.load(path, map_location="cpu", weights_only=True).items():
                state[name] = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        return state
    raise MissingInputError(f"{directory}: no *.safetensors or pytorch_model*.bin weights found")


def is_export(directory: str) -> bool:
    """Whether `directory` was written by one of our exports (its config.json is then complete)."""
    return os.path.exists(os.path.join(directory, EXPORT_MARKER))


def read_hf_config(directory: str) -> dict:
    """A model directory's config as a dict: our exports' config.json as written, any other's as
    transformers reads it (`AutoConfig`, which fills in what a hub config.json leaves to its class's
    defaults). OSError or ValueError when it is missing or unreadable."""
    if is_export(directory):
        with open(os.path.join(directory, "config.json")) as f:
            config = json.load(f)
        if not isinstance(config, dict):
            raise ValueError(f"{directory}/config.json is not a JSON object")
        return config
    import transformers

    return transformers.AutoConfig.from_pretrained(directory).to_dict()


def write_hf_config(config: dict, out_dir: str) -> None:
    """config.json as `save_pretrained` lays it out (sorted keys, indent 2), without transformers."""
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def hf_num_labels(config: dict) -> int:
    """A sequence classifier's outputs, as transformers counts them: its labels, else 2."""
    return len(config.get("id2label") or {}) or int(config.get("num_labels", 2))


def resolve_checkpoint_dir(path_or_name: str) -> str:
    """A local directory as is; otherwise a hub name (e.g. 'EleutherAI/pythia-2.8b') via huggingface_hub."""
    if os.path.isdir(path_or_name):
        return path_or_name
    if os.path.exists(path_or_name):
        raise ValueError(f"{path_or_name} is a file; from_hf expects a model directory or a hub name")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id=path_or_name, allow_patterns=_WEIGHT_PATTERNS)
    except Exception as e:  # offline machines, typos: say which name could not be resolved
        raise MissingInputError(
            f"{path_or_name!r} is not a local directory and could not be fetched from the Hugging Face hub: {e}"
        ) from e


def from_hf(
    path_or_name: str, *, dtype: Any = "float32", param_dtype: Any = "float32", shardings=None, **overrides
):
    """Load a GPT-2 / GPT-NeoX / GPT-J checkpoint, or a RoBERTa sequence classifier (`models.roberta`) ->
    (Flax module, params).

    dtype is the compute dtype, param_dtype the stored one; `overrides` set other ModelConfig
    fields (remat_policy, scan_layers, dropout_rate). With `shardings` (a pytree of
    jax.sharding.Sharding matching the params), each tensor goes straight from the host to its
    shards; without, params are returned as host numpy arrays.
    """
    directory = resolve_checkpoint_dir(path_or_name)
    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        raise MissingInputError(f"{directory}: no config.json")
    hf_config = read_hf_config(directory)
    if hf_config.get("model_type") == "roberta":  # a sequence classifier (the paper's sentiment reward)
        from dpo_jax.models.roberta import roberta_from_hf_state

        model, params = roberta_from_hf_state(
            hf_config,
            read_state_dict(directory),
            source=directory,
            dtype=dtype,
            param_dtype=param_dtype,
            **overrides,
        )
    else:
        cfg = from_hf_config(hf_config, dtype=dtype, param_dtype=param_dtype, **overrides)
        params = convert_hf_state_dict(cfg, read_state_dict(directory), source=directory)
        from dpo_jax.models.build import build_model

        model = build_model(cfg)
    _check_against_model(model, params, directory)
    if shardings is not None:
        import jax

        params = jax.tree.map(jax.device_put, params, shardings)
    return model, params


def _check_against_model(model, params, source: str) -> None:
    import jax

    from dpo_jax.models.build import abstract_params

    expected = jax.tree_util.tree_flatten_with_path(abstract_params(model))[0]
    found = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    for path, leaf in expected:
        key = jax.tree_util.keystr(path)
        if found.get(key) != leaf.shape:
            raise ValueError(
                f"{source}: parameter {key} has shape {found.get(key)}, the model expects {leaf.shape}"
            )


def to_hf(model, params, out_dir: str, *, dtype: Any = "float32", tokenizer=None) -> str:
    """Write a directory that `transformers.AutoModelForCausalLM.from_pretrained(out_dir)` loads."""
    from safetensors.numpy import save_file

    cfg: ModelConfig = model.config
    os.makedirs(out_dir, exist_ok=True)
    write_hf_config(hf_config_dict(cfg), out_dir)
    state = export_hf_state_dict(cfg, params, dtype)
    # "format": "pt" is what transformers checks before trusting a safetensors file's layout.
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, EXPORT_MARKER), "w") as f:
        json.dump({"arch": cfg.arch, "dtype": str(as_dtype(dtype)), "num_params": cfg.num_params()}, f)
    return out_dir
