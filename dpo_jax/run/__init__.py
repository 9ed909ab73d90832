"""The run infrastructure every stage uses (SFT, DPO, the reward model in `training`, PPO in `ppo`):

  workdir   the workdir's lock and the config a checkpoint was trained with (`workdir`)
  inputs    the locked workdir and the stage's tokenised data (`inputs`)
  optim     the optimizer and learning-rate schedule from the config (`optim`)
  state     the sharded train state, the frozen reference, the in-graph skip of a non-finite update (`state`)
  scaffold  lock, checkpoints, preemption, resume, metrics writer, FINISHED marker (`scaffold.RunScaffold`)
  loop      the one step loop with hooks: non-finite accounting, metric merging over the log interval,
            save / preempt, export (`loop.run_steps`)

A stage supplies its programs, data and hooks; nothing here knows which objective it trains.
"""

from dpo_jax.run.loop import Hook, LoopOutcome, LoopSettings, NonFiniteLossError, StageSteps, run_steps
from dpo_jax.run.scaffold import FINISHED_MARKER, Preempted, RunScaffold

__all__ = [
    "FINISHED_MARKER", "Hook", "LoopOutcome", "LoopSettings", "NonFiniteLossError", "Preempted", "RunScaffold",
    "StageSteps", "run_steps",
]  # fmt: skip
