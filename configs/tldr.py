"""TL;DR summarisation: DPO on the OpenAI comparisons (Stiennon et al.), the paper's summarisation task on
Pythia-2.8B. The paper's TL;DR run started from a GPT-J (6B) SFT model, an architecture dpo_jax does not
implement (GPT-2 and GPT-NeoX only); Pythia-2.8B is the paper's HH model and fits the same targets.

    python -m dpo_jax.main --config=configs/tldr.py:sft --workdir=/tmp/tldr-sft
    python -m dpo_jax.main --config=configs/tldr.py --workdir=/tmp/tldr-dpo \
        --config.model.name_or_path=/tmp/tldr-sft

The SFT stage trains on the human-written TL;DRs (CarperAI/openai_summarize_tldr). beta 0.5 as
in some of the paper's TL;DR runs; override with --config.beta=0.1.

Intended targets: v4-8, v5e-16, v5p-8, 1x and 8x H100. fp32 params, gradients and RMSprop moments
with the bf16 reference are ~50 GB, so the state is sharded over every chip (FSDP, `mesh_shape=(1,
-1, 1)`) and activations are recomputed (`remat_policy=full`) in micro-batches of 16 pairs (64 pairs
per step, `grad_accum_steps=4`); `python -m dpo_jax.aot --config=configs/tldr.py --target=...`
checks a target before a pod is started (README, "Compiling ahead of time").
"""

from configs.common import apply_variants, base_config


def get_config(arg=None):
    c = base_config()
    c.model.name_or_path = "EleutherAI/pythia-2.8b"
    c.data.source = "tldr_comparisons"
    c.data.path = "CarperAI/openai_summarize_comparisons"
    c.data.eval_split = "test"
    c.data.truncation_mode = "keep_end"  # the post ends with the "TL;DR:" cue
    c.beta = 0.5
    c.learning_rate = 1e-6
    c.mesh_shape = (1, -1, 1)  # FSDP over every chip: see the docstring
    c.grad_accum_steps = 4  # micro-batches of 16 pairs
    c.model.remat_policy = "full"
    # The largest evaluation: Best of 128 (128 samples per prompt in one decode call, 128 new tokens),
    # scored by a reward model of the policy's architecture; `aot --program=sample|score` sizes it.
    c.sampling.num_samples = 128
    variants = (arg or "").split(",")
    if "sft" in variants:
        c.data.source = "tldr_sft"
        c.data.path = "CarperAI/openai_summarize_tldr"
        c.data.eval_split = "valid"
    tiny = dict(source=c.data.source, path="fixture:" + c.data.source, eval_split="test")
    apply_variants(c, arg, tiny_source=tiny)
    return c
