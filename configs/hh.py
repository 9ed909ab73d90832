"""Anthropic-HH single-turn dialogue: DPO on Pythia, the paper's dialogue experiment.

    python -m dpo_jax.main --config=configs/hh.py:sft --workdir=/tmp/hh-sft
    python -m dpo_jax.main --config=configs/hh.py --workdir=/tmp/hh-dpo \
        --config.model.name_or_path=/tmp/hh-sft

The SFT stage is preferred-FT on the chosen responses (the paper's reference model for HH).
`:tiny` runs the same pipeline on the shipped HH fixture with a tiny random model on a CPU.

Intended targets: v4-8, v5e-16, v5p-8, 1x and 8x H100. fp32 params, gradients and RMSprop moments
with the bf16 reference are ~50 GB, so the state is sharded over every chip (FSDP, `mesh_shape=(1,
-1, 1)`) and activations are recomputed (`remat_policy=full`) in micro-batches of 16 pairs (64 pairs
per step, `grad_accum_steps=4`); `python -m dpo_jax.aot --config=configs/hh.py --target=...`
checks a target before a pod is started (README, "Compiling ahead of time").
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
    c.mesh_shape = (1, -1, 1)  # FSDP over every chip: see the docstring
    c.grad_accum_steps = 4  # micro-batches of 16 pairs
    c.model.remat_policy = "full"
    # The largest evaluation: Best of 128 (128 samples per prompt in one decode call, 128 new tokens),
    # scored by a reward model of the policy's architecture; `aot --program=sample|score` sizes it.
    c.sampling.num_samples = 128
    apply_variants(c, arg, tiny_source=dict(source="hh", path="fixture:hh", eval_split="test"))
    return c
