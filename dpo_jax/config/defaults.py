"""Every field of a dpo_jax run config, with its default: the one schema the trainer, the benchmark and
the configs in the repository's `configs/` directory share.

Library code builds configs from here (the top-level `configs/` directory is not installed with the
package); `configs/common.py` re-exports `base_config` and adds the experiment variants.
"""

import ml_collections

from dpo_jax.models.presets import TINY_MODELS


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "dpo"  # "sft" (maximum likelihood on the preferred response) or "dpo"
    c.seed = 0

    # Policy model: a hub name, a local Hugging Face directory, a dpo_jax workdir (its exported
    # final policy), or "random" (a fresh model of `random_init_config`, for tests and benchmarks).
    c.model = ml_collections.ConfigDict()
    c.model.name_or_path = "gpt2"
    c.model.random_init_config = ml_collections.ConfigDict(TINY_MODELS["gpt2"])
    c.model.dtype = "bfloat16"  # compute dtype
    c.model.param_dtype = "float32"  # master weights
    c.model.remat_policy = "none"  # none | full | dots | dots_with_no_batch_dims | save_matmuls_attention
    # auto: cuDNN flash attention on NVIDIA GPUs, splash on TPUs, XLA elsewhere and for decoding.
    c.model.attention = "auto"  # auto | xla | cudnn | splash
    c.model.scan_layers = False
    c.model.dropout_rate = 0.0  # the reference implementation trains DPO with dropout off

    # Reference model: "" = the initial policy (the paper's setting), else a model path like above.
    c.reference = ml_collections.ConfigDict()
    c.reference.name_or_path = ""
    # Frozen: bf16 storage halves its memory and loses nothing in matmuls that run in bf16 anyway; only
    # the fp32 layer norms see the rounding (initial implicit rewards ~1e-4 instead of exactly 0).
    c.reference.param_dtype = "bfloat16"
    c.reference.precompute_logps = False  # one pass over the train set, then free the reference
    # Precomputed log-probs kept in a cache keyed by (reference weights, data, tokenisation, lengths),
    # reused by every run of a sweep (dpo_jax.evaluation.reference_cache).
    c.reference.cache_logps = True
    c.reference.logps_cache_dir = ""  # "" = WORKDIR/../reference_logps_cache (shared by a sweep's runs)

    c.tokenizer = ""  # "" = the policy's tokenizer; "tiny" = the one shipped with dpo_jax

    c.data = ml_collections.ConfigDict()
    c.data.source = "hh"
    c.data.path = "Anthropic/hh-rlhf"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.max_length = 512
    c.data.max_prompt_length = 256
    c.data.truncation_mode = ""  # "" = the source's, as the reference: keep_end for hh, keep_start otherwise
    c.data.cache_dir = ""  # "" = WORKDIR/data_cache
    c.data.max_train_examples = 0  # 0 = all
    c.data.max_eval_examples = 256  # the reference implementation evaluates on 256 pairs
    c.data.shp_min_score_ratio = 2.0
    c.data.hh_single_turn = False  # hh: only prompts with exactly one human turn (filtered rows counted)
    # Rows (dpo_jax.data.packing): the prompt computed once per example, its K responses attending to it
    # (exact: same log-probs, losses and gradients as separate sequences: tests/objectives/test_rows.py),
    # and several examples packed per row. A step is still global_batch_size examples. Packing stays
    # off: a packed step's row count varies with its examples and each new count compiles the step once.
    c.data.share_prompt = True
    c.data.pack = False
    c.data.pack_length = 0  # tokens per packed row; 0 = the longest example row of the split

    # Objective (dpo_jax.objectives.preference_loss); checked when the config is read.
    c.loss = "dpo"  # dpo | ipo | hinge | robust | plackett_luce | sft | unlikelihood
    c.beta = 0.1
    c.label_smoothing = 0.0
    c.reference_free = False
    c.length_normalize = False  # mean instead of sum of token log-probs (TRL's IPO convention)
    c.plackett_luce_top_k = 0  # 0 = the whole ranking
    c.unlikelihood_alpha = 1.0  # unlikelihood: weight of the rejected response's unlikelihood term

    # Optimisation (the paper's code base: RMSprop, lr 5e-7 .. 1e-6, linear warmup 150, constant).
    c.optimizer = "rmsprop"
    c.learning_rate = 5e-7
    c.lr_schedule = "constant"
    c.warmup_steps = 150
    c.weight_decay = 0.0
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.adam_eps = 1e-8
    c.adam_mu_dtype = "float32"  # "bfloat16" keeps Adam's first moment in bf16 (memory; second stays fp32)
    c.max_grad_norm = 10.0
    c.global_batch_size = 64  # pairs per optimizer step, over all hosts and devices
    c.grad_accum_steps = 1  # micro-batches per step (global_batch_size / grad_accum_steps each)
    c.num_epochs = 1
    c.num_train_steps = 0  # 0 = num_epochs over the train set
    c.nonfinite_policy = "stop"  # stop | skip: a non-finite loss or gradient never updates the params
    c.max_consecutive_skipped_steps = 10  # with "skip": this many non-finite steps in a row end the run
    # Resuming refuses a checkpoint trained with other optimisation settings (beta, lr, data...);
    # True continues anyway (dpo_jax.run.workdir.HARMLESS_FIELDS may always change).
    c.allow_config_change = False

    # Mesh and sharding: axes (data, fsdp, tensor); one -1 takes the remaining devices.
    c.mesh_shape = (-1, 1, 1)
    c.logical_axis_rules = ()  # () = dpo_jax.sharding.DEFAULT_LOGICAL_AXIS_RULES

    # Logging, evaluation, checkpoints.
    c.log_every_steps = 10
    c.eval_every_examples = 20_000  # as the reference implementation
    c.eval_batch_size = 0  # 0 = the micro-batch size
    c.do_first_eval = True  # evaluate before the first step, as the reference implementation does
    # Policy and reference completions for the first eval prompts, side by side (WORKDIR/samples/).
    c.eval_samples = 16
    c.eval_sample_max_new_tokens = 128
    c.eval_sample_temperature = 1.0
    # The evaluations' sampling and scoring calls at scale (win rates, Best-of-N, make_pairs, the
    # frontier), as `python -m dpo_jax.aot --program=sample|score` compiles them; the paper-scale
    # recipes pass the same values to those commands (tests/recipes/test_plans.py holds them equal).
    c.sampling = ml_collections.ConfigDict()
    c.sampling.batch_size = 16  # rows (prompts x samples) per decode call; sequences per scoring call
    c.sampling.num_samples = 1  # completions per prompt drawn in one call (Best-of-N: N)
    c.sampling.max_new_tokens = 128
    # What scores the completions: a classifier's directory or hub name; "" = a reward model of the
    # policy's architecture (the recipes' Best-of-N selector, trained from the SFT model).
    c.sampling.scorer = ""
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3
    c.export_hf = True  # write WORKDIR/export (a Hugging Face directory) at the end
    c.tensorboard = True
    c.wandb_project = ""  # "" = W&B off
    c.progress_bar = True
    c.ppo = ppo_config()
    return c


def ppo_config() -> ml_collections.ConfigDict:
    """`stage="ppo"` (dpo_jax.ppo): global_batch_size prompts per rollout, num_train_steps rollouts,
    the optimizer fields as for any stage; the RLHF-specific settings here."""
    p = ml_collections.ConfigDict()
    # A reward-model export or workdir (stage=reward_model), or for PPO-GT any Hugging Face sequence
    # classifier (reward: p(reward_label | prompt + response text)); "" = a given reward function.
    p.reward_model = ""
    p.reward_label = ""  # the classifier's label (name or index) that is the reward; "" = its positive class
    p.value_model = ""  # the value model's start: "" = the policy's initial body with a zero head
    p.kl_coef = 0.05  # beta of the per-token KL penalty to the reference (the adaptive controller's start)
    p.kl_target = 0.0  # > 0: adapt kl_coef toward this sequence KL (Ziegler et al. 2019); 0 = fixed kl_coef
    p.kl_horizon = 10000  # the adaptive controller's horizon, in episodes (TRL's default)
    p.num_epochs = 4  # passes over each rollout batch
    p.num_minibatches = 4  # minibatches per pass (each global_batch_size / num_minibatches prompts)
    p.minibatch_size = 0  # > 0: prompts per update instead (sets num_minibatches = global_batch_size / it)
    p.clip_range = 0.2
    p.value_clip_range = 0.2
    p.vf_coef = 0.1
    p.entropy_coef = 0.0
    p.gamma = 1.0
    p.lam = 0.95
    p.whiten_advantages = True
    p.max_new_tokens = 64
    return p
