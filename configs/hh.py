"""Anthropic-HH single-turn dialogue: DPO on Pythia, the paper's dialogue experiment.

    python -m dpo_jax.main --config=configs/hh.py:sft --workdir=/tmp/hh-sft
    python -m dpo_jax.main --config=configs/hh.py --workdir=/tmp/hh-dpo \
        --config.model.name_or_path=/tmp/hh-sft

The SFT stage is preferred-FT on the chosen responses (the paper's reference model for HH).
`:tiny` runs the same pipeline on the shipped HH fixture with a tiny random model on a CPU.
"""

from configs.common import apply_variants, base_config


def get_config(arg=None):
    c = base_config()
    c.model.name_or_path = "EleutherAI/pythia-2.8b"
    c.data.source = "hh"
    c.data.path = "Anthropic/hh-rlhf"
    c.data.truncation_mode = "keep_end"  # dialogue: keep the latest turns
    c.beta = 0.1
    c.learning_rate = 1e-6
    apply_variants(c, arg, tiny_source=dict(source="hh", path="fixture:hh", eval_split="test"))
    return c
