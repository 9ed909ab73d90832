"""The one step loop every stage runs through (Levanter's `Trainer` with hooks is the model).

A stage hands the loop its step function, its data position and its hooks; the loop runs the steps:

    stage = StageSteps(step=step_fn, position=position_fn, num_steps=n, export=export_fn, ...)
    outcome = run_steps(run, stage, state, start_step=s, settings=LoopSettings.from_config(config),
                        hooks=[Hook("eval", eval_fn, every=10, at_start=True)])

SFT, DPO and the reward model (`training.loop`) and PPO (`ppo.loop`) all run here, so a config field
of the loop means the same thing in every stage:

  - `nonfinite_policy`, `max_consecutive_skipped_steps`: a step's metrics carry "nonfinite" as (updates
    skipped, updates); a step with a skipped update stops the run ("stop") or is counted ("skip"):
    `max_consecutive_skipped_steps` such steps in a row stop it, and a run that applied no update at
    all stops before exporting the unchanged model. Either way `NonFiniteLossError`, no FINISHED.
  - `log_every_steps`: the metrics of every step of the interval are merged as (sum, count) pairs
    (`metrics.merge_metrics`), so a logged row is the interval's mean ("nonfinite": its skipped
    updates, a count); the stage adds its row extras (learning rate, data counters).
  - `checkpoint_every_steps`, SIGTERM: a checkpoint of the state and the stage's data position
    (`RunScaffold.save`, `RunScaffold.preempted`); a preempted run returns `preempted=True`.
  - the export: after the last step, the stage's export and the FINISHED marker (`RunScaffold.finish`).

A step's finite flag is read one step late (after the next step is dispatched), so checking it never
stalls the device pipeline; a logged step, the last step and a stop are checked at once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax

from dpo_jax import UserError
from dpo_jax.metrics import Metrics, merge_metrics, metrics_to_floats
from dpo_jax.metrics.writer import Throughput
from dpo_jax.run.scaffold import RunScaffold

logger = logging.getLogger("dpo_jax")

NONFINITE_POLICIES = ("stop", "skip")
NONFINITE = "nonfinite"  # a step's (updates skipped, updates) pair


class NonFiniteLossError(RuntimeError):
    """A run stopped for non-finite losses or gradients (the command exits 1 with one line)."""


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """The loop's config fields, validated once (UserError naming the field)."""

    log_every_steps: int = 1
    nonfinite_policy: str = "stop"
    max_consecutive_skipped_steps: int = 0  # 0: no limit
    progress_bar: bool = False

    def __post_init__(self):
        if self.nonfinite_policy not in NONFINITE_POLICIES:
            raise UserError(
                f"config.nonfinite_policy={self.nonfinite_policy!r}; expected one of {NONFINITE_POLICIES}"
            )
        if self.max_consecutive_skipped_steps < 0:
            raise UserError(
                f"config.max_consecutive_skipped_steps={self.max_consecutive_skipped_steps} must be >= 0 "
                "(0: no limit)"
            )
        if self.log_every_steps < 1:
            raise UserError(f"config.log_every_steps={self.log_every_steps} must be >= 1")

    @classmethod
    def from_config(cls, config) -> LoopSettings:
        return cls(
            log_every_steps=config.log_every_steps,
            nonfinite_policy=config.nonfinite_policy,
            max_consecutive_skipped_steps=config.max_consecutive_skipped_steps,
            progress_bar=bool(config.progress_bar),
        )


@dataclasses.dataclass(frozen=True)
class Hook:
    """`fn(step, state) -> metrics to write (or None)`, run after every `every`-th step and after the
    last; `at_start`: also before the first step of a fresh run (step 0)."""

    name: str
    fn: Callable[[int, Any], dict[str, float] | None]
    every: int
    at_start: bool = False

    def due(self, step: int, num_steps: int) -> bool:
        return step % max(1, self.every) == 0 or step == num_steps


@dataclasses.dataclass
class StageSteps:
    """What a stage hands the loop.

    step: `(state, s) -> (state, metrics)` runs step s (0-based) and returns the state after s + 1 steps
        and the step's metrics as (sum, count) pairs, with "nonfinite" = (updates skipped, updates);
        device arrays or host numbers (a stage may dispatch and return before the device is done).
    position: `s -> dict`, the data position after s steps, saved with that step's checkpoint.
    row_extras: `(step, state, the step's metrics) -> floats` added to each logged row (learning rate,
        data counters).
    export: `state -> writer or None`, called on every process once the last step is done (gathers
        are collective); process 0 runs the writer before the FINISHED marker.
    throughput: the tokens and FLOPs per step behind the perf/ figures (default: seconds per step).
    headline: the metrics a non-finite step's message shows.
    """

    step: Callable[[Any, int], tuple[Any, Metrics]]
    position: Callable[[int], dict]
    num_steps: int
    row_extras: Callable[[int, Any, Metrics], dict[str, float]] | None = None
    export: Callable[[Any], Callable[[], None] | None] | None = None
    throughput: Throughput | None = None
    headline: tuple[str, ...] = ("loss", "grad_norm")


@dataclasses.dataclass
class LoopOutcome:
    state: Any
    step: int
    preempted: bool  # stopped by SIGTERM after saving; the command exits with PREEMPTED_EXIT
    logged: dict[str, float]  # the last logged row
    hook_metrics: dict[str, dict[str, float]]  # each hook's last metrics


class _NonFiniteAccount:
    """The non-finite accounting of one run (this process's run: a resumed run counts from its restart)."""

    def __init__(self, stage: StageSteps, settings: LoopSettings):
        self.stage, self.settings = stage, settings
        self.consecutive_skipped = 0
        self.applied = 0  # updates applied

    def check(self, metrics: Metrics, step: int) -> None:
        skipped, updates = (float(v) for v in jax.device_get(metrics[NONFINITE]))
        self.applied += round(updates - skipped)
        if skipped == 0:
            self.consecutive_skipped = 0
            return
        self.consecutive_skipped += 1
        floats = metrics_to_floats(
            jax.device_get({k: metrics[k] for k in self.stage.headline if k in metrics})
        )
        shown = ", ".join(f"{k}={floats.get(k)}" for k in self.stage.headline)
        what = (
            "the update was skipped"
            if updates == 1
            else f"{skipped:g} of its {updates:g} updates were skipped"
        )
        message = f"non-finite loss or gradient at step {step} ({shown}); {what}"
        if self.settings.nonfinite_policy == "stop":
            raise NonFiniteLossError(
                message + ". Stopping (set config.nonfinite_policy='skip' to skip such steps)."
            )
        limit = self.settings.max_consecutive_skipped_steps
        if limit and self.consecutive_skipped >= limit:
            raise NonFiniteLossError(
                f"{message}: {self.consecutive_skipped} non-finite steps in a row "
                f"(config.max_consecutive_skipped_steps={limit}). Stopping: the run is not training."
            )
        logger.warning(message)

    def refuse_unchanged_export(self, start_step: int, step: int) -> None:
        if step > start_step and self.applied == 0:
            raise NonFiniteLossError(
                f"no step of this run ({start_step + 1}..{step}) updated the parameters: every one was "
                "non-finite and skipped. Not exporting the unchanged model."
            )


def merged_row(pending: Sequence[Metrics]) -> dict[str, float]:
    """The logged row of an interval's step metrics: each metric's mean over the interval (sum / count),
    "nonfinite" the number of updates skipped in it."""
    summed = merge_metrics(*jax.device_get(list(pending)))
    floats = metrics_to_floats(summed, skip_empty=True)
    floats[NONFINITE] = float(summed[NONFINITE][0])
    return floats


def run_steps(
    run: RunScaffold,
    stage: StageSteps,
    state,
    *,
    start_step: int,
    settings: LoopSettings,
    hooks: Sequence[Hook] = (),
) -> LoopOutcome:
    """Steps `start_step`..`stage.num_steps` of a stage inside `run` (module docstring), then the export."""
    num_steps = stage.num_steps
    writer = run.metrics_writer(start_step)
    account = _NonFiniteAccount(stage, settings)
    throughput = stage.throughput or Throughput()
    hook_metrics: dict[str, dict[str, float]] = {}
    logged: dict[str, float] = {}

    def run_hooks(step: int, state, *, start: bool = False) -> None:
        for hook in hooks:
            if hook.at_start if start else hook.due(step, num_steps):
                metrics = hook.fn(step, state)
                if metrics:
                    writer.write(step, metrics)
                    hook_metrics[hook.name] = metrics

    progress = _progress_bar(settings, start_step, num_steps)
    step, preempted, pending, unchecked = start_step, False, [], None
    try:
        if start_step == 0:
            run_hooks(0, state, start=True)
        while step < num_steps:
            state, metrics = stage.step(state, step)
            step += 1
            if unchecked is not None:  # the previous step is done by now: reading its flag costs no stall
                account.check(*unchecked)
            unchecked = (metrics, step)
            pending.append(metrics)
            if step % settings.log_every_steps == 0 or step == num_steps:
                account.check(*unchecked)
                unchecked = None
                logged = merged_row(pending)
                logged.update(stage.row_extras(step, state, metrics) if stage.row_extras else {})
                logged.update(throughput.update(step))
                writer.write(step, logged)
                pending = []
            run_hooks(step, state)
            run.save(step, state, stage.position(step))
            if run.preempted(step, state, stage.position(step), num_steps=num_steps):
                preempted = True
                break
            if progress is not None:
                progress.update(1)
                perf = {k.split("/")[-1]: f"{v:.3g}" for k, v in logged.items() if k.startswith("perf/")}
                progress.set_postfix(perf)
        if unchecked is not None:
            account.check(*unchecked)
        if not preempted:
            account.refuse_unchanged_export(start_step, step)
        run.save(step, state, stage.position(step), force=True)
    finally:
        if progress is not None:
            progress.close()
    if step == num_steps:
        run.finish(step, stage.export(state) if stage.export else None)
    return LoopOutcome(state, step, preempted, logged, hook_metrics)


def _progress_bar(settings: LoopSettings, start: int, total: int):
    if not settings.progress_bar or jax.process_index() != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
