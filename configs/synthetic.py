"""The synthetic benchmark: DPO against the exact optimum of the KL-constrained reward objective.

    python -m dpo_jax.main --config=configs/synthetic.py --workdir=/tmp/dpo-demo

Runs on a CPU with nothing to download: SFT of a tiny GPT-2 on a hidden generator's samples (pi_ref),
preference pairs drawn exactly from pi_ref and labelled by Bradley-Terry under a hidden reward, DPO
at `beta` from pi_ref, the paper's preferred-FT and unlikelihood baselines, then exact reward and KL
of every policy on held-out prompts against the reward-vs-KL frontier. Each stage is one command in
WORKDIR/<stage>, run by the recipe engine (dpo_jax/recipes/synthetic_demo.py): a second call reuses
every finished stage, a changed setting re-runs the stages it reaches.

The top-level training fields (learning_rate, num_train_steps, global_batch_size, ...) are the DPO
stage's; `synthetic.<stage>` holds what the other stages change. The frontier over beta:

    python -m dpo_jax.main --config=configs/synthetic.py --workdir=/tmp/dpo-frontier \\
        --config.synthetic.betas=0.05,0.1,0.25,0.5,1.0

(one run, SFT and baselines trained once), or one run per beta sharing them:

    python launch/sweep.py --config=configs/synthetic.py --workdir_root=/tmp/dpo-sweep --mode=local \\
        --config.synthetic.reference_workdir=/tmp/dpo-sweep/shared
    python launch/frontier.py --root=/tmp/dpo-sweep

Measured on 2 shared CPU cores: the default run about 2.5 minutes (DPO at beta 0.1: gain ratio
0.93; preferred-FT 0.81, unlikelihood 0.47); the 5-beta sweep about 6 minutes (gain ratio 0.92 to
0.95 at every beta). `:tiny` shrinks everything to a seconds-long end-to-end check.

The RLHF baselines (reward model on the same pairs, PPO with the true and the learned reward at each
KL coefficient, exact best-of-N with the learned reward model), beside DPO at the same betas:

    python -m dpo_jax.main --config=configs/synthetic.py:rlhf --workdir=/tmp/dpo-rlhf
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs.common import base_config

# A GPT-2 over exactly the task's vocabulary, so its distribution over responses of T tokens is
# normalised over the V**T completions the evaluator enumerates.
SYNTHETIC_GPT2 = dict(
    model_type="gpt2",
    n_layer=2,
    n_embd=64,
    n_head=4,
    n_positions=8,  # prompt_length + response_length
    vocab_size=8,
    bos_token_id=0,
    eos_token_id=0,
)


def _stage_overrides(**values) -> ml_collections.ConfigDict:
    """The training fields a stage may set for itself; typed placeholders so the command line can too."""
    fields = dict(
        learning_rate=placeholder(float),
        num_train_steps=placeholder(int),
        warmup_steps=placeholder(int),
        lr_schedule=placeholder(str),
        global_batch_size=placeholder(int),
    )
    overrides = ml_collections.ConfigDict(fields)
    overrides.update(values)
    return overrides


def _synthetic_settings() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    # The task (dpo_jax.synthetic.task.SyntheticTask) and the seed of every data draw.
    s.vocab_size = 8
    s.prompt_length = 4
    s.response_length = 4
    s.task_seed = 0
    s.reward_scale = 1.0
    s.data_seed = 1
    # SFT data: one generator sample per prompt; prompts drawn uniformly (with repeats).
    s.num_sft_examples = 16384
    # Preference data: distinct prompts, each with pairs_per_prompt draws (y1, y2) ~ pi_ref.
    s.num_pair_prompts = 2048
    s.pairs_per_prompt = 16
    # Held-out prompts (disjoint from the pair prompts) for the exact evaluation and eval pairs.
    s.num_eval_prompts = 128
    s.eval_pairs_per_prompt = 4
    # DPO betas of this run, comma separated: "" = config.beta. Each trains its own DPO stage.
    s.betas = ""
    s.baselines = "preferred_ft,unlikelihood"  # comma separated; "" = none
    # Where the beta-independent stages (SFT, pairs, baselines) live: "" = this workdir. A sweep
    # points every beta at one directory so they are trained once.
    s.reference_workdir = ""
    # The exact frontier drawn and stored: pi*_beta at frontier_points betas spaced geometrically over
    # [frontier_beta_min, frontier_beta_max] (KL from about 9 nats down to 0.01), plus the run's betas.
    s.frontier_beta_min = 0.02
    s.frontier_beta_max = 20.0
    s.frontier_points = 40
    s.table_batch_size = 8192  # rows per forward pass of the exact evaluator's completion tree
    # Per-stage changes to the top-level (DPO) training fields; None = DPO's value. The baselines
    # train like DPO (same pairs, steps and learning rate) unless set here.
    s.sft = _stage_overrides(learning_rate=3e-3, num_train_steps=1000, warmup_steps=50, lr_schedule="cosine")
    s.preferred_ft = _stage_overrides()
    s.unlikelihood = _stage_overrides()
    # The RLHF baselines (dpo_jax/synthetic/rlhf.py), off by default (the `rlhf` variant turns them on).
    # Best-of-N from pi_ref ranked by the learned reward model, for each N (comma separated; "" = none).
    s.best_of_n = ""
    # PPO from pi_ref on the pair prompts, one stage per KL coefficient ("" = no PPO) and reward
    # ("true": the task's hidden reward; "learned": the reward model).
    s.ppo_kl_coefs = ""
    s.ppo_rewards = "true,learned"
    # The reward model trains on the DPO pairs like DPO (steps, learning rate) unless set here; PPO's
    # rollout batch (global_batch_size prompts), rollout steps (num_train_steps) and learning rate here,
    # the rest of PPO in the top-level `ppo` fields.
    s.reward_model = _stage_overrides()
    s.ppo = _stage_overrides(learning_rate=1e-3, num_train_steps=200, global_batch_size=128, warmup_steps=0)
    return s


def get_config(arg=None):
    c = base_config()
    c.task = "synthetic_benchmark"
    c.synthetic = _synthetic_settings()
    c.stage = "dpo"
    c.loss = "dpo"
    c.beta = 0.1
    c.model.name_or_path = "random"
    c.model.random_init_config = ml_collections.ConfigDict(SYNTHETIC_GPT2)
    c.model.dtype = "float32"
    # The reference must be pi_ref exactly: the evaluator's KL is to the fp32 SFT model.
    c.reference.param_dtype = "float32"
    c.data.source = "synthetic"  # informational: the benchmark builds its token arrays itself
    c.data.path = ""
    c.optimizer = "adamw"
    c.learning_rate = 3e-4
    c.warmup_steps = 20
    c.lr_schedule = "constant"
    c.max_grad_norm = 10.0
    c.global_batch_size = 64
    c.num_train_steps = 1000
    c.mesh_shape = (-1, 1, 1)
    c.log_every_steps = 50
    c.eval_every_examples = 1_000_000  # once, at the end of each stage
    c.do_first_eval = False
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 1
    c.tensorboard = False
    c.progress_bar = False

    c.ppo.num_epochs = 2
    c.ppo.num_minibatches = 2
    c.ppo.vf_coef = 0.1

    variants = [v for v in (arg or "").split(",") if v]
    unknown = sorted(set(variants) - {"tiny", "rlhf"})
    if unknown:
        raise ValueError(f"unknown config variant(s) {unknown}; known: ['rlhf', 'tiny']")
    if "rlhf" in variants:
        # DPO and PPO at the same betas (PPO's KL coefficient is the beta of the same objective).
        c.synthetic.betas = c.synthetic.ppo_kl_coefs = "0.1,0.25,0.5,1.0"
        c.synthetic.best_of_n = ",".join(str(2**k) for k in range(8))  # 1, 2, 4, ..., 128
    if "tiny" in variants:
        s = c.synthetic
        s.vocab_size = 4
        s.prompt_length = 3
        s.response_length = 3
        s.num_sft_examples = 256
        s.num_pair_prompts = 16
        s.pairs_per_prompt = 8
        s.num_eval_prompts = 8
        s.eval_pairs_per_prompt = 2
        s.frontier_points = 5
        s.table_batch_size = 1024
        s.sft.update(dict(num_train_steps=8, learning_rate=1e-2, warmup_steps=1))
        c.model.random_init_config.update(dict(n_layer=1, n_embd=16, n_head=2, n_positions=6, vocab_size=4))
        c.learning_rate = 1e-2
        c.warmup_steps = 1
        c.global_batch_size = 16  # two rows per fake CPU device in the tests
        c.num_train_steps = 8
        c.log_every_steps = 4
        c.checkpoint_every_steps = 4
        s.reward_model.update(dict(learning_rate=3e-3))
        s.ppo.update(dict(num_train_steps=3, global_batch_size=16, learning_rate=1e-2))
        c.ppo.num_epochs = 2
        c.ppo.num_minibatches = 2
        if "rlhf" in variants:
            s.best_of_n = "1,2,8"
            s.betas = s.ppo_kl_coefs = "0.1"
    return c
