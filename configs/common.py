"""What every dpo_jax config shares: the full set of fields with the DPO paper's defaults, and variants.

`base_config()` (every field and its default) lives in the package, `dpo_jax.config.defaults`, so that
library code and installed commands can build a config without this directory; it is re-exported here.
Each dataset config (tldr.py, hh.py, imdb.py) starts from `base_config()` and changes only what
differs. Variants are selected by the config argument, comma separated:
`--config=configs/hh.py:sft,tiny`. `tiny` swaps in a tiny random model, the tiny tokenizer and
the fixtures shipped with the package, so any config runs on a CPU in seconds; with `neox` or `gptj`
the tiny model is a GPT-NeoX or a GPT-J (`:tiny,gptj`) instead of a GPT-2. `pythia` (and `neox`, `gptj`
without `tiny`) names a paper-scale model instead of the config's own.
"""

import ml_collections

from dpo_jax.config import base_config
from dpo_jax.models.presets import TINY_MODELS

__all__ = ["TINY_MODELS", "VARIANTS", "apply_variants", "base_config"]


# The variants every dataset config takes (`python -m dpo_jax.main --help` lists them too).
VARIANTS = ("sft", "tiny", "neox", "gptj", "pythia", "precompute")


def apply_variants(config: ml_collections.ConfigDict, arg: str | None, tiny_source: dict) -> None:
    """Apply the comma-separated variants of the config argument (sft, tiny, neox, gptj, pythia, ...)."""
    variants = [v for v in (arg or "").split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown config variant {', '.join(unknown)} (variants: {', '.join(VARIANTS)})")
    if "sft" in variants:
        # The reference implementation's SFT runs its DPO optimizer (RMSprop, warmup 150, clip 10) at
        # its default lr 5e-7, 64 examples per step (README, "Defaults and the reference implementation").
        config.stage = "sft"
        config.loss = "sft"
        config.optimizer = "rmsprop"
        config.learning_rate = 5e-7
    if "precompute" in variants:
        config.reference.precompute_logps = True
    if "tiny" in variants:
        if "neox" in variants and "gptj" in variants:
            raise ValueError("config variants 'neox' and 'gptj' pick two tiny models; choose one")
        if "pythia" in variants:
            raise ValueError("config variant 'pythia' names the paper-scale Pythia-2.8B; the tiny one is 'tiny,neox'")
        arch = "gpt_neox" if "neox" in variants else "gptj" if "gptj" in variants else "gpt2"
        config.model.name_or_path = "random"
        config.model.random_init_config = ml_collections.ConfigDict(TINY_MODELS[arch])
        config.model.dtype = "float32"
        config.reference.param_dtype = "float32"  # match the fp32 compute: rewards start at exactly 0
        config.tokenizer = "tiny"
        config.data.update(tiny_source)
        config.data.max_length = 64
        config.data.max_prompt_length = 32
        config.data.max_eval_examples = 16
        config.global_batch_size = 8  # one row per fake CPU device (the smallest fixture has 15 pairs)
        config.grad_accum_steps = 1
        config.mesh_shape = (-1, 1, 1)  # pure data parallel over the fake CPU devices
        config.model.remat_policy = "none"
        config.model.scan_layers = False  # a python loop over the tiny model's 2 blocks
        config.num_train_steps = 4
        config.learning_rate = 1e-3 if config.stage == "sft" else 1e-4
        config.optimizer = "adamw"
        config.warmup_steps = 1
        config.log_every_steps = 1
        config.eval_every_examples = 16
        config.eval_samples = 2
        config.eval_sample_max_new_tokens = 8
        config.sampling.update(batch_size=8, num_samples=2, max_new_tokens=8, scorer="")
        config.checkpoint_every_steps = 2
        config.progress_bar = False
    elif "neox" in variants:
        config.model.name_or_path = "EleutherAI/pythia-410m"
        config.tokenizer = ""
    elif "gptj" in variants:
        config.model.name_or_path = "EleutherAI/gpt-j-6b"
        config.tokenizer = ""
    elif "pythia" in variants:
        config.model.name_or_path = "EleutherAI/pythia-2.8b"  # the paper's HH model
        config.tokenizer = ""
