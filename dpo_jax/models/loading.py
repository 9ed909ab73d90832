"""From the config's model fields to a Flax module and host params: policy and reference.

A model is named by a hub name, a local Hugging Face directory, a dpo_jax workdir (its exported
final policy, so an SFT run feeds a DPO run), or "random" (a fresh model of
`random_init_config`). Params come back on the host; the trainer places them onto the mesh.
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any

import jax

from dpo_jax import MissingInputError, UserError
from dpo_jax.models import ModelConfig, build_model, from_hf, from_hf_config, init_params
from dpo_jax.models.config import ARCHITECTURES
from dpo_jax.models.hf_io import resolve_checkpoint_dir
from dpo_jax.models.presets import (
    CLASSIFIER_ARCHITECTURES,
    CLASSIFIER_PRESETS,
    HUB_ARCHITECTURES,
    MODEL_PRESETS,
)
from dpo_jax.models.reward import ScalarHeadModel, from_hf_reward_model, scalar_head_params

EXPORT_DIRNAME = "export"


# What the hub accepts as a model id ("gpt2", "EleutherAI/pythia-2.8b"); anything else is a local path.
_HUB_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_model_path(name_or_path: str) -> str:
    """A dpo_jax workdir stands for the Hugging Face export of its final policy; a path that cannot be
    a hub id ("/runs/sft", "./sft", "a/b/c") and does not exist is a missing directory, said so."""
    if not os.path.exists(name_or_path) and not _HUB_MODEL_ID.match(name_or_path):
        raise MissingInputError(f"model directory {name_or_path} does not exist")
    exported = os.path.join(name_or_path, EXPORT_DIRNAME)
    if os.path.exists(os.path.join(exported, "config.json")):
        return exported
    if os.path.isdir(name_or_path) and not os.path.exists(os.path.join(name_or_path, "config.json")):
        raise MissingInputError(
            f"{name_or_path} is a directory without config.json and without {EXPORT_DIRNAME}/config.json: "
            "not a Hugging Face model directory, nor a finished dpo_jax workdir"
        )
    return name_or_path


NO_MODEL_HINT = (
    "pass a local model directory (a Hugging Face directory or a finished dpo_jax workdir) or run the "
    "config's :tiny variant (a tiny random model, no download), e.g. --config=configs/hh.py:tiny"
)


def check_model_sources(config) -> None:
    """Before a run creates anything: the policy and the reference it names can be had. A local path
    must exist (as a Hugging Face directory or a finished workdir); a hub name must have its
    config.json in the local cache or be downloadable. Otherwise one `UserError` with a hint."""
    for field in ("model.name_or_path", "reference.name_or_path"):
        section, leaf = field.split(".")
        name = config[section].get(leaf) or ""
        if not name or name == "random":
            continue
        try:
            path = resolve_model_path(name)
        except MissingInputError as error:
            raise MissingInputError(f"--config.{field}={name}: {error}; {NO_MODEL_HINT}") from None
        if os.path.isdir(path):
            continue
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(
                f"--config.{field}={name}: cannot be loaded from the Hugging Face hub or its local cache "
                f"({reason}); {NO_MODEL_HINT}"
            ) from None


def _runtime_overrides(model_cfg) -> dict[str, Any]:
    return dict(
        dtype=model_cfg.dtype,
        remat_policy=model_cfg.remat_policy,
        attention=model_cfg.attention,
        scan_layers=model_cfg.scan_layers,
        dropout_rate=model_cfg.dropout_rate,
    )


def random_model_config(model_cfg, *, param_dtype: str) -> ModelConfig:
    hf_fields = dict(model_cfg.random_init_config)
    return from_hf_config(hf_fields, param_dtype=param_dtype, **_runtime_overrides(model_cfg))


def describe_model(model_cfg, *, param_dtype: str, name_or_path: str | None = None) -> ModelConfig:
    """The model's architecture without its weights: for compiling ahead of time, off-line.

    "random" is `random_init_config`; a local directory (or finished workdir) is read from its
    config.json; a hub name is matched by its last path part to a published architecture
    (dpo_jax.models.presets: "EleutherAI/pythia-2.8b" -> pythia-2.8b), or by `HUB_ARCHITECTURES`
    ("CarperAI/openai_summarize_tldr_sft" -> gpt-j-6b), so no download is needed.
    """
    name = name_or_path or model_cfg.name_or_path
    if name == "random":
        return random_model_config(model_cfg, param_dtype=param_dtype)
    path = resolve_model_path(name)
    overrides = dict(param_dtype=param_dtype, **_runtime_overrides(model_cfg))
    if os.path.isdir(path):
        import json

        with open(os.path.join(resolve_checkpoint_dir(path), "config.json")) as f:
            return from_hf_config(json.load(f), **overrides)
    preset = HUB_ARCHITECTURES.get(name.rstrip("/").lower(), name.rstrip("/").split("/")[-1].lower())
    if preset not in MODEL_PRESETS:
        raise ValueError(
            f"model {name!r}: not a local directory and not a known architecture "
            f"({', '.join(sorted(MODEL_PRESETS))}); pass a local Hugging Face directory or 'random' "
            "with model.random_init_config"
        )
    return from_hf_config(dict(MODEL_PRESETS[preset]), **overrides)


def describe_scorer(name_or_path: str, dtype="float32"):
    """The Flax module of a scorer (a RoBERTa sequence classifier or a dpo_jax reward model) without
    its weights, in `dtype` compute (fp32 params) as the judges load it (`judges.scoring.scorer_dtype`):
    a local directory (or workdir) is read from its config.json, a hub name must be one
    `models.presets.CLASSIFIER_ARCHITECTURES` knows."""
    from dpo_jax.models.roberta import RobertaForSequenceClassification, roberta_config_from_hf

    path = resolve_model_path(name_or_path)
    if os.path.isdir(path):
        with open(os.path.join(resolve_checkpoint_dir(path), "config.json")) as f:
            hf_config = json.load(f)
    elif name_or_path in CLASSIFIER_ARCHITECTURES:
        hf_config = dict(CLASSIFIER_PRESETS[CLASSIFIER_ARCHITECTURES[name_or_path]])
    else:
        raise ValueError(
            f"scorer {name_or_path!r}: not a local directory and not a known classifier "
            f"({', '.join(sorted(CLASSIFIER_ARCHITECTURES))})"
        )
    if hf_config.get("model_type") == "roberta":
        return RobertaForSequenceClassification(roberta_config_from_hf(hf_config, dtype=dtype))
    if hf_config.get("model_type") in ARCHITECTURES and len(hf_config.get("id2label") or {0: ""}) == 1:
        return ScalarHeadModel(from_hf_config(hf_config, dtype=dtype, param_dtype="float32"))
    raise ValueError(
        f"scorer {name_or_path!r}: a {hf_config.get('model_type')!r} classifier scores in PyTorch on the "
        "host (judges.sequence_classifier); only RoBERTa classifiers and dpo_jax reward models compile"
    )


def load_model(model_cfg, *, param_dtype: str, seed: int, name_or_path: str | None = None):
    """-> (module, host params). `name_or_path` defaults to model_cfg.name_or_path."""
    name = name_or_path or model_cfg.name_or_path
    if name == "random":
        model = build_model(random_model_config(model_cfg, param_dtype=param_dtype))
        # One jitted program: run eagerly, every init op compiles on its own (~10 s even for tiny models).
        params = jax.jit(functools.partial(init_params, model))(jax.random.PRNGKey(seed))
        return model, jax.device_get(params)
    return from_hf(resolve_model_path(name), param_dtype=param_dtype, **_runtime_overrides(model_cfg))


def tokenizer_source(config) -> str:
    """The tokenizer to load: the configured one, else the policy's own directory or hub name."""
    if config.tokenizer:
        return config.tokenizer
    name = config.model.name_or_path
    if name == "random":
        raise UserError("model.name_or_path='random' needs config.tokenizer (e.g. 'tiny' or 'gpt2')")
    path = resolve_model_path(name)
    return resolve_checkpoint_dir(path) if os.path.isdir(path) else path


def is_reward_model_dir(path: str) -> bool:
    """Whether a Hugging Face directory (or dpo_jax workdir) holds a sequence classifier (a reward model)."""
    config_path = os.path.join(resolve_model_path(path), "config.json")
    if not os.path.exists(config_path):
        return False
    with open(config_path) as f:
        architectures = json.load(f).get("architectures") or []
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def load_scalar_head_model(
    model_cfg, *, param_dtype: str, seed: int, name_or_path: str | None = None, zero_head: bool = False
):
    """-> (ScalarHeadModel, host params): a reward-model export as it is, or a language model's body
    with a fresh head (normal(0.02), or 0 with `zero_head`: a value model that starts predicting 0)."""
    name = name_or_path or model_cfg.name_or_path
    if name != "random" and is_reward_model_dir(name):
        return from_hf_reward_model(
            resolve_model_path(name), param_dtype=param_dtype, **_runtime_overrides(model_cfg)
        )
    lm, lm_params = load_model(model_cfg, param_dtype=param_dtype, seed=seed, name_or_path=name)
    params = scalar_head_params(
        lm_params, jax.random.PRNGKey(seed), hidden_size=lm.config.hidden_size, zero_head=zero_head
    )
    return ScalarHeadModel(lm.config), params


def load_reference_params(config, initial_params):
    """Host params of the frozen reference: `config.reference.name_or_path`, else the initial policy's
    own params (the paper's setting)."""
    if not config.reference.name_or_path:
        return initial_params
    _, params = load_model(
        config.model,
        param_dtype=config.reference.param_dtype,
        seed=config.seed,
        name_or_path=config.reference.name_or_path,
    )
    return params
