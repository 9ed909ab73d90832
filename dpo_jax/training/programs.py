"""The trainer's program builder: from a config, a model and a mesh, the stage's jitted programs.

    programs = StagePrograms(config, model, mesh, rules)
    programs.reference_in_step, programs.precompute_reference   # the one answer to "which reference"
    programs.train_step(state_shardings, batch)                 # jitted, state donated
    programs.eval_step                                          # jitted
    programs.reference_logps                                    # jitted; None unless precomputed

SFT, DPO and the reward model (`training.loop`), `bench` (`perf.benchmark`) and `aot` (`perf.aot`) build
their programs here, so they cannot disagree on whether a stage uses a reference, on which apply
function its objective reads, or on how a program is jitted: every one is traced inside the mesh and
its logical-axis rules. PPO's programs are built the same way in `ppo.programs`.
"""

from __future__ import annotations

from dpo_jax.evaluation.passes import jit_eval_step, jit_reference_logps_step
from dpo_jax.objectives import uses_reference
from dpo_jax.training.checks import loss_options_from_config
from dpo_jax.training.step import jit_train_step, make_apply_fn, make_value_fn


def stage_uses_reference(config) -> bool:
    """Whether the stage needs a frozen reference model (a reward model never does; PPO always does,
    for its KL penalty)."""
    if config.stage == "reward_model":
        return False
    if config.stage == "ppo":
        return True
    return uses_reference(config.loss, reference_free=config.reference_free)


def stage_module(config, model_cfg):
    """The module a stage trains for the architecture `model_cfg`: the language model, or for
    `stage=reward_model` its body under the scalar head (what `training.loop` loads)."""
    from dpo_jax.models import build_model
    from dpo_jax.models.reward import ScalarHeadModel

    return ScalarHeadModel(model_cfg) if config.stage == "reward_model" else build_model(model_cfg)


class StagePrograms:
    """The jitted programs of one SFT, DPO or reward-model stage on `mesh`."""

    def __init__(self, config, model, mesh, rules):
        self.config, self.mesh, self.rules = config, mesh, rules
        # A reward model's objective reads its values; a policy's, its hidden states and vocabulary head.
        self.apply_fn = make_value_fn(model) if config.stage == "reward_model" else make_apply_fn(model)
        self.uses_reference = stage_uses_reference(config)
        # Precomputed: one pass before training attaches the log-probs to the batches, the reference is freed.
        self.precompute_reference = self.uses_reference and bool(config.reference.precompute_logps)
        self.reference_in_step = self.uses_reference and not self.precompute_reference
        # The objective, validated once: the one value every program of the stage takes.
        self.loss_options = loss_options_from_config(config)
        self.eval_step = jit_eval_step(
            self.apply_fn, self.loss_options, mesh, rules, has_reference=self.reference_in_step
        )
        self.reference_logps = None
        if self.precompute_reference:
            self.reference_logps = jit_reference_logps_step(
                self.apply_fn, mesh, rules, length_normalize=self.loss_options.length_normalize
            )

    @property
    def flops_per_token_factor(self) -> int:
        """Model FLOPs per parameter and trained token: forward and backward 6, a reference forward 2."""
        return 8 if self.reference_in_step else 6

    def train_step(self, state_shardings, batch):
        """The train step for batches shaped like `batch` (global or abstract arrays)."""
        return jit_train_step(
            self.apply_fn, self.config, state_shardings, batch, self.mesh, self.rules,
            has_reference=self.reference_in_step, loss_options=self.loss_options,
        )  # fmt: skip
