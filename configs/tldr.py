"""TL;DR summarisation: DPO on the OpenAI comparisons (Stiennon et al.) from the paper's TL;DR policy, the
GPT-J-6B SFT model CarperAI/openai_summarize_tldr_sft (the paper's Section 6 / appendix on TL;DR).

    python -m dpo_jax.main --config=configs/tldr.py --workdir=/tmp/tldr-dpo

The default policy (and, as in the paper, the reference) is that SFT model, fetched from the hub by name
with GPT-J's tokenizer (GPT-2's BPE; the model's 50400-row vocabulary is padded beyond it). To train
the SFT stage yourself on the human-written TL;DRs (CarperAI/openai_summarize_tldr) and start DPO from it:

    python -m dpo_jax.main --config=configs/tldr.py:sft --workdir=/tmp/tldr-sft   # from EleutherAI/gpt-j-6b
    python -m dpo_jax.main --config=configs/tldr.py --workdir=/tmp/tldr-dpo \
        --config.model.name_or_path=/tmp/tldr-sft

Variants: `:pythia` trains Pythia-2.8B instead (this config's model before GPT-J was implemented; the
paper's HH model); `:tiny` runs the pipeline on the shipped fixtures with a tiny random GPT-2 on a CPU,
`:tiny,gptj` with a tiny random GPT-J. beta 0.5 as in some of the paper's TL;DR runs; override with
--config.beta=0.1.

Targets (BENCHMARKS.md 7.1 lists what the compilers say, for these defaults): fp32 params and RMSprop
moments, the fp32 gradient and the bf16 reference of a 6B model are ~97 GB, so the state is sharded
over every chip (FSDP, `mesh_shape=(1, -1, 1)`), activations are recomputed (`remat_policy=full`) in
micro-batches of 8 pairs (64 pairs per step, `grad_accum_steps=8`), and the 28 blocks run as one
`nn.scan` (`model.scan_layers`: a TPU compile in minutes and ~3 GB of host RAM). The train step fits
8x H100 (16.3 of 79.1 GiB) and a v5p-8 (35.8 of 95 GiB); a v5e-16 with --config.grad_accum_steps=4
(its 16 chips need micro-batches of 16 pairs: 12.4 of 16 GiB). The smallest slice, a v4-8, does not
hold it (35.3 of 32 GiB); `:precompute --config.grad_accum_steps=16` compiles to 31.9 of 32 GiB there,
too thin a margin to ship as the default. `python -m dpo_jax.aot --config=configs/tldr.py --target=...`
checks a target before a pod is started (README, "Compiling ahead of time").
"""

from configs.common import apply_variants, base_config

# The paper's TL;DR SFT policy (a GPT-J-6B fine-tuned on the human TL;DRs) and GPT-J's tokenizer.
TLDR_SFT_MODEL = "CarperAI/openai_summarize_tldr_sft"
GPTJ_TOKENIZER = "EleutherAI/gpt-j-6b"


def get_config(arg=None):
    c = base_config()
    c.model.name_or_path = TLDR_SFT_MODEL
    c.tokenizer = GPTJ_TOKENIZER
    c.data.source = "tldr_comparisons"
    c.data.path = "CarperAI/openai_summarize_comparisons"
    c.data.eval_split = "test"
    c.data.truncation_mode = "keep_end"  # the post ends with the "TL;DR:" cue
    c.beta = 0.5
    c.learning_rate = 1e-6
    c.mesh_shape = (1, -1, 1)  # FSDP over every chip: see the docstring
    c.grad_accum_steps = 8  # micro-batches of 8 pairs
    c.model.remat_policy = "full"
    # One nn.scan over GPT-J's 28 blocks: the compiler sees one block, not 28 (a TPU compile of the 6B
    # train step takes ~2 minutes and ~3 GB of host RAM instead of 14-30 minutes and ~17-21 GB).
    c.model.scan_layers = True
    # The largest evaluation: Best of 128 (128 samples per prompt in one decode call, 128 new tokens),
    # scored by a reward model of the policy's architecture; `aot --program=sample|score` sizes it.
    c.sampling.num_samples = 128
    variants = (arg or "").split(",")
    if "pythia" in variants:
        c.grad_accum_steps = 4  # micro-batches of 16 pairs fit Pythia-2.8B on every target
        c.model.scan_layers = False  # as its compiled rows (BENCHMARKS.md 5)
    if "sft" in variants:
        c.model.name_or_path = "EleutherAI/gpt-j-6b"  # the base model the SFT policy was tuned from
        c.data.source = "tldr_sft"
        c.data.path = "CarperAI/openai_summarize_tldr"
        c.data.eval_split = "valid"
    tiny = dict(source=c.data.source, path="fixture:" + c.data.source, eval_split="test")
    apply_variants(c, arg, tiny_source=tiny)
    return c
