"""The synthetic demo on the recipe engine: `python -m dpo_jax.main --config=configs/synthetic.py`.

    python -m dpo_jax.main --config=configs/synthetic.py --workdir=/tmp/dpo-demo
    python -m dpo_jax.main --config=configs/synthetic.py:rlhf --workdir=/tmp/dpo-rlhf

The stages, each one `python -m dpo_jax.synthetic.steps` command in DIR/<stage> (engine.py: fingerprints,
reuse, resume, SIGTERM -> 75), in order: `sft` (pi_ref and its exact tables) -> `pairs` (the preference
pairs, drawn exactly from pi_ref) -> `preferred_ft`, `unlikelihood` (`synthetic.baselines`) ->
`reward_model` and `ppo_<true|learned>_reward_kl_<c>` (the RLHF baselines, `synthetic.best_of_n` /
`synthetic.ppo_kl_coefs`) -> `<loss>_beta_<b>` for each beta of `synthetic.betas` (else `beta`) ->
`evaluation` (every policy exactly against the frontier). Then DIR/synthetic_eval.json (the evaluation
with each stage's seconds, 0 for a reused one), DIR/synthetic_frontier.png, the table and a RESULT line.

The stages before DPO do not depend on beta: `synthetic.reference_workdir` puts them in a directory a
sweep over beta shares (trained once, then reused by every beta's run). Each stage's command is
`--config=<the config file>:<variant>` plus the `--config.` overrides of the run that the stage reads
(`stage_flags`): a changed setting re-runs the stages that read it and the stages after them; a
setting the field table (dpo_jax/config/fields.py) says changes no training (logging, a kernel) is
passed without entering the fingerprint, so changing it reuses every finished stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from dpo_jax import UserError
from dpo_jax.config.command_line import read_config, result_line
from dpo_jax.config.fields import changes_training
from dpo_jax.recipes.engine import Runner, Stage, check_dag
from dpo_jax.run.workdir import WorkdirLock, WorkdirLockedError

STEPS_MODULE = "dpo_jax.synthetic.steps"
EVALUATION = "evaluation"
FINISHED_MARKER = "FINISHED"  # dpo_jax.run's: launch/sweep.py skips a beta's finished workdir
# `synthetic.<group>`: one stage's own changes to the top-level training fields.
GROUPS = ("sft", "preferred_ft", "unlikelihood", "reward_model", "ppo")
# Which stages run and what the evaluation draws: read by the evaluation alone (and by this module).
RUN_SHAPE = tuple(
    f"synthetic.{name}"
    for name in (
        "betas",
        "baselines",
        "best_of_n",
        "ppo_kl_coefs",
        "ppo_rewards",
        "frontier_beta_min",
        "frontier_beta_max",
        "frontier_points",
    )
)


def load_base_config(config_ref: str):
    """The config `FILE[:VARIANT]` names, as `get_config(VARIANT)` builds it (no overrides), read as the
    commands read a config file."""
    return read_config([f"--config={config_ref}"])


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(config, base) -> dict[str, Any]:
    """{dotted field: value} where `config` differs from `base`: the run's `--config.` overrides."""
    ours, theirs = _leaves(config.to_dict()), _leaves(base.to_dict())
    return {field: value for field, value in ours.items() if field not in theirs or theirs[field] != value}


def config_flag(field: str, value: Any) -> str:
    if value is None:
        raise UserError(f"--config.{field}: the demo's stages cannot be given None")
    if isinstance(value, (tuple, list)):
        text = "(" + ",".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return f"--config.{field}={text}"


def _reads(field: str, config, kind: str, group: str | None) -> bool:
    parts = field.split(".")
    if field == "synthetic.reference_workdir":
        return False
    if parts[0] == "synthetic" and len(parts) > 2 and parts[1] in GROUPS:
        return parts[1] == group
    if field in RUN_SHAPE:
        return kind == EVALUATION
    if kind == "pairs":  # pi_ref's tables and the task's data fields are all it reads
        return parts[0] == "synthetic"
    if parts[0] == "ppo":
        return kind == "ppo"
    if field in ("beta", "loss"):
        return kind == EVALUATION  # a DPO stage is given its beta and loss by name
    # A top-level training field the stage's own group sets is not the stage's.
    return not (group and len(parts) == 1 and config.synthetic[group].get(field) is not None)


def stage_flags(changes: dict[str, Any], config, kind: str, group: str | None = None):
    """(fingerprinted, not fingerprinted) `--config.` flags of a stage of `kind`: the run's changes the
    stage reads; those the field table says change no training go untracked, but for RUN_SHAPE's
    (which decide what the evaluation reports)."""
    tracked, untracked = [], []
    for field, value in changes.items():
        if not _reads(field, config, kind, group):
            continue
        parts = field.split(".")
        effective = ".".join(parts[2:]) if group and parts[:2] == ["synthetic", group] else field
        training = changes_training(effective) and parts[0] != "data"  # the steps build their own data
        (tracked if training or field in RUN_SHAPE else untracked).append(config_flag(field, value))
    return tracked, untracked


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    shared: list[Stage]  # in the shared directory (synthetic.reference_workdir, else DIR)
    run: list[Stage]  # in DIR: the DPO stages and the evaluation
    policies: dict[
        str, str
    ]  # the evaluation record's "stages": policy key -> directory (as DIR's stages name it)


def plan_demo(config, config_ref: str, root: str, shared: str) -> DemoPlan:
    """The demo's stages for `config` (built from the config file `config_ref` names, plus overrides)."""
    from dpo_jax.synthetic import rlhf
    from dpo_jax.synthetic.experiment import baselines, check_model, make_task, run_betas
    from dpo_jax.synthetic.report import EVAL_FILE

    check_model(config, make_task(config.synthetic))
    betas, names, ppo = run_betas(config), baselines(config), rlhf.ppo_runs(config.synthetic)
    reward_model = rlhf.needs_reward_model(config.synthetic)
    config_file = os.path.abspath(config_ref.partition(":")[0])
    variant = config_ref.partition(":")[2]
    common = os.path.join(os.path.dirname(config_file), "common.py")  # configs/common.py, which it imports
    inputs = (config_file, common) if os.path.isfile(common) else (config_file,)
    changes = config_changes(config, load_base_config(f"{config_file}:{variant}"))
    same = os.path.abspath(shared) == os.path.abspath(root)

    def shared_dir(name: str) -> str:  # as a stage in DIR names it
        return f"{{root}}/{name}" if same else os.path.join(os.path.abspath(shared), name)

    def stage(name, kind, flags, *, after=(), group=None, stage_kind="train", extra=(), outputs=None):
        tracked, untracked = stage_flags(changes, config, kind, group)
        args = [STEPS_MODULE, f"--step={flags.pop('step', kind)}", f"--config={config_file}"]
        args[-1] += f":{variant}" if variant else ""
        args += [*extra, *tracked, f"--workdir={{root}}/{name}"]
        args += [f"--{flag}={value}" for flag, value in flags.items()]
        outputs = outputs or {"policy": f"{{root}}/{name}"}
        return Stage(
            name, tuple(args), tuple(after), inputs, stage_kind, outputs=outputs, untracked=tuple(untracked)
        )

    sft, pairs = {"sft": "{root}/sft"}, {"sft": "{root}/sft", "pairs": "{root}/pairs"}
    out = [
        stage("sft", "sft", {}, group="sft"),
        stage("pairs", "pairs", dict(sft), after=("sft",), stage_kind="sample"),
    ]
    for name in names:
        flags = {"step": "baseline", "method": name, **pairs}
        out.append(stage(name, "baseline", flags, after=("sft", "pairs"), group=name))
    if reward_model:
        out.append(
            stage(
                rlhf.REWARD_MODEL, "reward_model", dict(pairs), after=("sft", "pairs"), group="reward_model"
            )
        )
    for reward, coef in ppo:
        flags = {"ppo_reward": reward, "kl_coef": repr(coef), **sft}
        after = ("sft",)
        if reward == "learned":
            flags["reward_model"], after = f"{{root}}/{rlhf.REWARD_MODEL}", ("sft", rlhf.REWARD_MODEL)
        out.append(stage(rlhf.ppo_stage_name(reward, coef), "ppo", flags, after=after, group="ppo"))
    runs, policies = [], {"sft": shared_dir("sft")}
    policies.update({name: shared_dir(name) for name in names})
    if reward_model:
        policies[rlhf.REWARD_MODEL] = shared_dir(rlhf.REWARD_MODEL)
    for beta in betas:
        name = f"{config.loss}_beta_{beta!r}"
        flags = {"sft": shared_dir("sft"), "pairs": shared_dir("pairs")}
        extra = (config_flag("beta", beta), config_flag("loss", config.loss))
        runs.append(stage(name, "dpo", flags, after=("sft", "pairs"), extra=extra))
        policies[f"dpo/{beta!r}"] = f"{{root}}/{name}"
    for reward, coef in ppo:
        policies[f"ppo/{reward}/{coef!r}"] = shared_dir(rlhf.ppo_stage_name(reward, coef))
    policy_dirs = [shared_dir(s.name) for s in out[2:] if s.name != rlhf.REWARD_MODEL]
    policy_dirs = [f"{{root}}/{s.name}" for s in runs] + policy_dirs
    flags = {"step": "exact_eval", "pairs": shared_dir("pairs"), "runs": ",".join(policy_dirs)}
    if reward_model:
        flags["reward_model"] = shared_dir(rlhf.REWARD_MODEL)
    after = tuple(s.name for s in out) + tuple(s.name for s in runs)
    evaluation = {"evaluation": f"{{root}}/{EVALUATION}/{EVAL_FILE}"}
    runs.append(stage(EVALUATION, EVALUATION, flags, after=after, stage_kind="score", outputs=evaluation))
    return DemoPlan(shared=out, run=runs, policies=policies)


@contextlib.contextmanager
def wait_for_lock(directory: Path, log=print, poll_s: float = 5.0):
    """The shared directory's lock, waited for while another run of a sweep holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    lock, waiting = WorkdirLock(directory, single_process=True), False
    while True:
        try:
            lock.acquire()
            break
        except WorkdirLockedError:
            if not waiting:
                log(f"waiting for another run's stages in {directory} (its lock)")
                waiting = True
            time.sleep(poll_s)
    try:
        yield lock
    finally:
        lock.release()


def run_demo(config, workdir: str, config_ref: str, *, log=print) -> dict[str, Any]:
    """Every stage of the demo that has not finished with these settings, then the evaluation record
    (returned, and written to DIR/synthetic_eval.json), the figure, the table and a RESULT line."""
    from dpo_jax.synthetic import report

    root = Path(os.path.abspath(workdir))
    reference = config.synthetic.reference_workdir
    shared = Path(os.path.abspath(reference)) if reference else root
    try:
        plan = plan_demo(config, config_ref, str(root), str(shared))
        check_dag(plan.shared + plan.run)
    except ValueError as error:
        raise UserError(str(error)) from None
    start, records = time.time(), []
    root.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(root, single_process=True):
        (root / FINISHED_MARKER).unlink(missing_ok=True)  # until this run's evaluation is written
        fingerprints, run_ids = {}, {}
        for directory, stages in ((shared, plan.shared), (root, plan.run)):
            with contextlib.ExitStack() as held:
                # The shared directory is held while its stages run: a sweep's other betas wait, then reuse them.
                if directory != root:
                    held.enter_context(wait_for_lock(directory, log))
                runner = Runner(str(directory), log=log)
                runner.fingerprints.update(fingerprints)  # the shared stages' runs, for the stages after them
                runner.run_ids.update(run_ids)
                with runner.handling_preemption():
                    records += [runner.run(stage) for stage in stages]
                fingerprints, run_ids = runner.fingerprints, runner.run_ids
        # The report reads the evaluation stage's declared output.
        output = plan.run[-1].outputs["evaluation"].replace("{root}", str(root))
        evaluation = json.loads(Path(output).read_text())
        result = {
            **evaluation,
            "stages": {key: path.replace("{root}", str(root)) for key, path in plan.policies.items()},
            "seconds": {record.name: record.seconds for record in records},
        }
        (root / report.EVAL_FILE).write_text(json.dumps(result, indent=2))
        figure = report.plot(result, root / report.PLOT_FILE)
        log(report.format_table(result))
        log(f"wrote {root / report.EVAL_FILE} and {root / report.PLOT_FILE}; stages under {root}")
        (root / FINISHED_MARKER).write_text(json.dumps({"time": time.time()}))
        summary = {
            "recipe": "synthetic_demo",
            "stages": [{"name": r.name, "status": r.status, "seconds": round(r.seconds, 1)} for r in records],
            "seconds": round(time.time() - start, 1),
            "eval": str(root / report.EVAL_FILE),
            "figure": str(figure) if figure else None,
            "beta": result["beta"],
            "gain_ratio": result["gain_ratio"],
        }
        log(result_line(summary))
    return result
