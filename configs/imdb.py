"""IMDb controlled generation: the SFT stage of the paper's sentiment experiment.

    python -m dpo_jax.main --config=configs/imdb.py:sft --workdir=/tmp/imdb-sft

The paper fine-tunes GPT-2-large on IMDb reviews, then trains DPO on pairs sampled from that
model and labelled by a sentiment classifier. The SFT stage is `:sft`; `python -m dpo_jax.make_pairs`
makes the pairs from the SFT run, and the default variant trains DPO on them:

    python -m dpo_jax.make_pairs --workdir=/tmp/imdb-sft --num_samples=4 --out=/tmp/imdb_pairs.jsonl
    python -m dpo_jax.main --config=configs/imdb.py --workdir=/tmp/imdb-dpo \
        --config.model.name_or_path=/tmp/imdb-sft --config.data.path=/tmp/imdb_pairs.jsonl \
        --config.data.eval_split=

`python -m dpo_jax.frontier` then draws the reward-vs-KL frontier of a beta sweep (see the README).

Intended targets: v5e-8, 1x H100. fp32 params, gradients and RMSprop moments with the bf16
reference are ~11 GB, sharded over every chip (FSDP, `mesh_shape=(1, -1, 1)`), in micro-batches of
16 pairs (64 per step, `grad_accum_steps=4`); `python -m dpo_jax.aot --config=configs/imdb.py
--target=...` checks a target before a pod is started (README, "Compiling ahead of time").
"""

from configs.common import apply_variants, base_config


def get_config(arg=None):
    c = base_config()
    c.model.name_or_path = "gpt2-large"
    c.data.source = "local"
    c.data.path = ""  # pairs sampled from the SFT model and labelled by the reward (JSONL/Parquet)
    c.data.eval_split = ""  # make_pairs writes one file: no eval split unless one is given
    c.data.truncation_mode = "keep_start"
    c.data.max_length = 256
    c.data.max_prompt_length = 64
    c.beta = 0.1
    c.learning_rate = 1e-6
    c.mesh_shape = (1, -1, 1)  # FSDP over every chip: see the docstring
    c.grad_accum_steps = 4  # micro-batches of 16 pairs
    # The frontier's and make_pairs' calls: 4 samples per prefix, 64 rows per call, 64 new tokens, scored
    # by the paper's RoBERTa-large sentiment classifier; `aot --program=sample|score` sizes them.
    c.sampling.update(
        batch_size=64, num_samples=4, max_new_tokens=64, scorer="siebert/sentiment-roberta-large-english"
    )
    variants = (arg or "").split(",")
    if "sft" in variants:
        c.data.source = "imdb"
        c.data.path = "stanfordnlp/imdb"
        c.data.eval_split = "test"
    tiny = dict(source=c.data.source, path="fixture:" + c.data.source, eval_split="test")
    apply_variants(c, arg, tiny_source=tiny)
    return c
