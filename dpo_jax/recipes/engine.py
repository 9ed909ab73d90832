"""Running a recipe: a DAG of stages, each an ordinary run of a dpo_jax command in DIR/<stage>.

A stage is a command line (`python -m dpo_jax.main ...`, `python -m dpo_jax.make_pairs ...`) run as
a subprocess, so each stage starts with fresh JAX state and is exactly the run a user would start by
hand: `sample`, `winrate` and `frontier` work on its workdir alone. Paths inside the recipe's DIR are
written `{root}` in the stage's arguments, so a moved DIR keeps its stages.

A stage's fingerprint hashes its arguments (with `{root}` unexpanded), the contents of the input
files it names outside DIR (config files, data fixtures) and the fingerprints of the stages it
depends on. Finishing writes DIR/<stage>/STAGE.json with the fingerprint and what it hashed;
starting writes STAGE.started.json. So on the next run of the recipe:
- a finished stage with the same fingerprint is reused, never re-run, once its outputs are verified:
  STAGE.json lists every file the stage wrote (but its checkpoints and data cache) with its size and
  sha256, and the run of each upstream stage it read; a missing or altered output re-runs the stage in
  place (a trainer resumes from its last checkpoint and exports again), an upstream stage that ran
  again re-runs it afresh;
- a DIR that moved (STAGE.json records where it ran) has the paths in its stages' JSON files
  (run_config.json: the reference an evaluation samples) re-rooted to where it is now;
- a started (killed) stage with the same fingerprint is run again in place: the trainer resumes
  from its last checkpoint;
- a stage whose fingerprint changed is re-run, after printing which parts changed; its old
  directory moves to DIR/.superseded/ (not deleted: nothing is lost silently).
On a multi-host slice every host runs the recipe: worker 0 leads as above; the others follow it,
writing nothing but their stage logs (DIR/<stage>/stage.worker<N>.log): a stage the lead finished is
reused, a stage on the devices runs beside the lead's once the lead has prepared it (its
STAGE.started.json), a stage without devices is left to the lead and waited for, and a failure the
lead records for this launch (STAGE.failed.json with the launch's session) stops them too.
Children die with the recipe (PR_SET_PDEATHSIG on Linux): a killed recipe leaves no stage running
into the next one. A SIGTERM to the recipe is passed to the running stage, which saves and exits 75;
a SIGTERM while no stage runs, while one starts up (before it can save) or after one finished, stops
the recipe with 75 too, the stage kept for the next run (resumed in place, or reused if finished).
A bookkeeping file the recipe cannot write (a full disk) is one line and exit status 1, leaving no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpo_jax import UserError
from dpo_jax.recipes.stage_outputs import (
    BOOKKEEPING,
    FAILED_FILE,
    STAGE_FILE,
    STARTED_FILE,
    damaged_outputs,
    file_sha256,
    output_manifest,
    reroot_stage_files,
    stage_reason,
)

ENGINE_VERSION = 1
LOG_FILE = "stage.log"
FOLLOW_POLL_SECONDS = 0.5
LAUNCHED_KINDS = ("train", "sample", "score")  # the stages that run under the Runner's launcher
PREEMPTED_EXIT = 75  # dpo_jax.checkpoint.PREEMPTED_EXIT, without importing jax here


class StageFailed(RuntimeError):
    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


@dataclasses.dataclass(frozen=True)
class Stage:
    """One run of the recipe. `args` is a command line after `python -m`, with `{root}` for DIR."""

    name: str
    args: tuple[str, ...]
    after: tuple[str, ...] = ()  # the stages it reads
    inputs: tuple[str, ...] = ()  # files or directories outside DIR whose contents it reads
    kind: str = "train"  # train | sample | score | report (for the plan)
    plan: dict[str, Any] = dataclasses.field(default_factory=dict)  # steps, samples, judge calls, ...
    aot: Any = None  # for a training stage: () -> the config to compile on --dry_run
    # What it writes that later stages and the report read ({"run": "{root}/dpo", "result": ...}): a
    # report reads a stage's declared outputs, never its arguments. Not part of the fingerprint.
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    # Arguments appended to the command but not fingerprinted: settings that change nothing the stage
    # computes (a config field the field table calls cosmetic or program-only: logging, a kernel), so
    # changing one reuses the finished stage, and a resumed one takes the new value.
    untracked: tuple[str, ...] = ()

    @property
    def command(self) -> tuple[str, ...]:
        return (*self.args, *self.untracked)


def hash_path(path: str) -> str:
    """sha256 of a file, or of a directory's files (names and contents, in sorted order)."""
    target = Path(path)
    if not target.exists():
        raise UserError(f"recipe input {path} does not exist")
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(target) if file != target else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def stage_identity(stage: Stage, upstream: dict[str, str], input_hashes: dict[str, str]) -> dict[str, Any]:
    return {
        "engine": ENGINE_VERSION,
        "args": list(stage.args),
        "inputs": {path: input_hashes[path] for path in stage.inputs},
        "upstream": {name: upstream[name] for name in stage.after},
    }


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two identities, one line per changed argument, input or upstream stage."""
    changes = []
    old_args, new_args = _args_by_flag(old.get("args", [])), _args_by_flag(new["args"])
    for flag in sorted(set(old_args) | set(new_args)):
        if old_args.get(flag) != new_args.get(flag):
            changes.append(f"{flag}: {old_args.get(flag, '(absent)')} -> {new_args.get(flag, '(absent)')}")
    for part, what in (("inputs", "input"), ("upstream", "upstream stage")):
        before, after = old.get(part, {}), new[part]
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                changes.append(f"{what} {name} changed")
    if old.get("engine") != new["engine"]:
        changes.append(f"recipe engine version {old.get('engine')} -> {new['engine']}")
    return changes or ["(fingerprint differs)"]


def _args_by_flag(args: list[str]) -> dict[str, str]:
    out = {}
    for position, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        out[flag if flag.startswith("--") else f"argument {position}"] = (
            value if flag.startswith("--") else arg
        )
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Written whole or not at all; a failure (a full disk) is one line, and no `.tmp` stays behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise StageFailed(f"cannot write {path}: {error.strerror or error}", 1) from None


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: a killed recipe may leave its current stage running
        pass


def stage_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The recipe's environment, with this checkout importable by the stages (and `extra`, where the
    environment does not already set those variables)."""
    env = {**(extra or {}), **os.environ}
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


@dataclasses.dataclass
class StageRecord:
    name: str
    status: str  # ran | reused
    seconds: float
    fingerprint: str


class Runner:
    """Runs stages in order in DIR, reusing, resuming and superseding as the fingerprints say."""

    def __init__(
        self,
        root: str,
        *,
        log: Callable[[str], None] = print,
        launcher: tuple[str, ...] = (),
        worker: int = 0,
        session: str = "",
        environment: dict[str, str] | None = None,
    ):
        self.root = Path(os.path.abspath(root))
        self.environment = dict(environment or {})  # stage environment defaults (a compilation cache)
        # Several hosts of one slice, each running the recipe (`worker` its index): worker 0, the
        # lead, keeps the books (STAGE files, superseded directories, the report); the others follow
        # it (`_follow`). `session` names this launch, so that a follower takes no failure of an
        # earlier launch for one of this one.
        self.worker, self.session = int(worker), str(session)
        # Stages that run programs on the devices (training, sampling, scoring) run under it, e.g. a
        # script that runs the command on every node with srun: each of those commands joins
        # jax.distributed when the environment asks (config.runtime). Other stages run here.
        self.launcher = tuple(launcher)
        self.log = log
        self.fingerprints: dict[str, str] = {}
        self.run_ids: dict[str, str] = {}  # each finished stage's run (a new one when it runs again)
        self._input_hashes: dict[str, str] = {}
        self.preempted = False  # a SIGTERM reached the recipe
        self._process: subprocess.Popen | None = None

    def _on_sigterm(self, signum, frame) -> None:
        self.preempted = True
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    @contextlib.contextmanager
    def handling_preemption(self):
        """A preemption notice (SIGTERM) to the recipe goes to its running stage, which saves and exits
        75 (the recipe then exits 75 too); without this the recipe would die at once and take the stage
        down with SIGKILL (PR_SET_PDEATHSIG) before it could save. Between stages, or while one starts,
        it is noted and the recipe stops before the next stage."""
        if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
            yield
            return
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _stop_if_preempted(self, what: str) -> None:
        if self.preempted:
            raise StageFailed(
                f"the recipe was preempted (SIGTERM) {what}; rerun the recipe to go on", PREEMPTED_EXIT
            )

    def expand(self, arg: str) -> str:
        return arg.replace("{root}", str(self.root))

    def identity(self, stage: Stage) -> dict[str, Any]:
        for path in stage.inputs:
            if path not in self._input_hashes:
                self._input_hashes[path] = hash_path(path)
        return stage_identity(stage, self.fingerprints, self._input_hashes)

    def run(self, stage: Stage) -> StageRecord:
        with self.handling_preemption():
            self._stop_if_preempted(f"before stage {stage.name}")
            return self._run(stage)

    def _run(self, stage: Stage) -> StageRecord:
        missing = [name for name in stage.after if name not in self.fingerprints]
        if missing:
            raise ValueError(f"stage {stage.name} runs after {missing}, which have not run")
        identity = self.identity(stage)
        key = fingerprint(identity)
        if self.worker:
            return self._follow(stage, key)
        directory = self.root / stage.name
        for name in BOOKKEEPING:  # a write cut short by a kill or a full disk
            (directory / f"{name}.tmp").unlink(missing_ok=True)
        finished = _read_json(directory / STAGE_FILE)
        in_place = False  # a finished run with damaged outputs: run again in its own directory
        if finished is None and (directory / STAGE_FILE).exists():
            self.log(f"stage {stage.name}: its {STAGE_FILE} is damaged (not readable JSON); re-running it")
            self._supersede(directory)
        elif finished is not None and finished.get("fingerprint") == key:
            problems = self._damaged(stage, finished, directory)
            if not problems:
                self._reroot(stage, finished, directory)
                self.run_ids[stage.name] = finished.get("run", "")
                return self._reuse(stage, key, f"reused (finished {finished.get('seconds', 0):.0f} s run)")
            self.log(f"stage {stage.name}: re-running it, its finished run cannot be reused:")
            for line in problems:
                self.log(f"  {line}")
            if any(line.startswith("upstream") for line in problems):
                self._supersede(directory)  # it read another run's outputs: start afresh
            else:  # a trainer restores its last checkpoint and writes its outputs again
                in_place = True
            finished = None
        started = _read_json(directory / STARTED_FILE)
        if finished is not None or (started is not None and started.get("fingerprint") != key):
            previous = (finished or started)["identity"]
            self.log(f"stage {stage.name}: re-running, its inputs changed:")
            for line in describe_changes(previous, identity):
                self.log(f"  {line}")
            self._supersede(directory)
        elif started is not None:
            self.log(f"stage {stage.name}: resuming an interrupted run")
        elif in_place:
            pass
        elif directory.exists() and any(directory.iterdir()):
            self.log(f"stage {stage.name}: {directory} holds files no recipe wrote; moving them aside")
            self._supersede(directory)
        seconds = self._execute(stage, directory, identity, key)
        self.fingerprints[stage.name] = key
        self._stop_if_preempted(f"after stage {stage.name} finished")
        return StageRecord(stage.name, "ran", seconds, key)

    def _damaged(self, stage: Stage, finished: dict[str, Any], directory: Path) -> list[str]:
        """Why a finished run cannot be reused: an upstream stage ran again since, or an output is gone
        or altered. (A STAGE.json from before outputs were recorded is trusted as it stands.)"""
        problems = [
            f"upstream stage {name} ran again since"
            for name, run in sorted(finished.get("upstream_runs", {}).items())
            if self.run_ids.get(name, run) != run
        ]
        return problems + damaged_outputs(directory, finished.get("files", {}))

    def _reroot(self, stage: Stage, finished: dict[str, Any], directory: Path) -> None:
        old_root = finished.get("root")
        if not old_root or old_root == str(self.root):
            return
        changed = reroot_stage_files(directory, old_root, str(self.root))
        outputs = finished.get("files", {})
        for name in changed:
            if name in outputs:
                stat = (directory / name).stat()
                outputs[name] = [stat.st_size, stat.st_mtime_ns, file_sha256(directory / name)]
        _write_json(directory / STAGE_FILE, {**finished, "root": str(self.root), "files": outputs})
        if changed:
            self.log(f"stage {stage.name}: DIR moved from {old_root}; re-rooted {', '.join(changed)}")

    def _supersede(self, directory: Path) -> None:
        if not directory.exists():
            return
        aside = self.root / ".superseded" / f"{directory.name}.{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 0
        while aside.exists():
            suffix += 1
            aside = aside.with_name(f"{aside.name}.{suffix}")
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(directory), str(aside))
        self.log(f"  the previous run is kept in {aside}")

    def _reuse(self, stage: Stage, key: str, note: str) -> StageRecord:
        self.fingerprints[stage.name] = key
        self.log(f"stage {stage.name}: {note}")
        return StageRecord(stage.name, "reused", 0.0, key)

    def _follow(self, stage: Stage, key: str) -> StageRecord:
        """A follower's turn at a stage. It writes nothing but its own log: a stage the lead finished
        (with this fingerprint) is reused; a stage that runs on the devices is run here beside the
        lead's run, once the lead has prepared it (its STAGE.started.json carries this fingerprint:
        any old directory is moved aside by then); any other stage (no devices: the lead alone runs
        it) is waited for. A failure the lead reports for this launch stops the follower too."""
        directory, noted = self.root / stage.name, time.time()
        while True:
            finished = _read_json(directory / STAGE_FILE)
            if finished is not None and finished.get("fingerprint") == key:
                self.run_ids[stage.name] = finished.get("run", "")
                return self._reuse(stage, key, "finished by the lead worker")
            failed = _read_json(directory / FAILED_FILE)
            if (
                failed is not None
                and failed.get("fingerprint") == key
                and failed.get("session") == self.session
            ):
                raise StageFailed(
                    f"stage {stage.name} failed on the lead worker (exit status {failed['exit_status']}); "
                    f"see {directory / LOG_FILE}",
                    int(failed["exit_status"]),
                )
            started = _read_json(directory / STARTED_FILE)
            if stage.kind in LAUNCHED_KINDS and started is not None and started.get("fingerprint") == key:
                break
            if time.time() - noted > 60:
                self.log(f"stage {stage.name}: waiting for the lead worker")
                noted = time.time()
            time.sleep(FOLLOW_POLL_SECONDS)
        returncode, seconds = self._launch(stage, directory / f"stage.worker{self.worker}.log")
        if returncode != 0:
            raise StageFailed(
                f"stage {stage.name} failed on worker {self.worker} (exit status {returncode}); "
                f"see {directory}/stage.worker{self.worker}.log",
                returncode,
            )
        self.fingerprints[stage.name] = key
        self.log(f"stage {stage.name}: ran in {seconds:.1f} s beside the lead worker")
        return StageRecord(stage.name, "ran", seconds, key)

    def _launch(self, stage: Stage, log_path: Path) -> tuple[int, float]:
        """Run the stage's command (under the launcher when it uses the devices), its output appended
        to `log_path`; a SIGTERM to the recipe is passed to it -> (exit status, seconds)."""
        launcher = self.launcher if stage.kind in LAUNCHED_KINDS else ()
        command = [*launcher, sys.executable, "-m", *(self.expand(a) for a in stage.command)]
        self.log(f"stage {stage.name}: running {' '.join(command[len(launcher) + 2 :])}")
        start = time.time()
        try:
            with open(log_path, "a", encoding="utf-8") as log_file:
                log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
                log_file.flush()
                if self.preempted:  # the notice came while the stage was being prepared
                    return -signal.SIGTERM, 0.0
                self._process = subprocess.Popen(
                    command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=stage_environment(self.environment),
                    preexec_fn=_die_with_parent if os.name == "posix" else None,
                )
                if self.preempted:  # it came between the check and the start: pass it on
                    self._process.send_signal(signal.SIGTERM)
                self._process.wait()
                return self._process.returncode, time.time() - start
        except OSError as error:  # the log cannot be written (a full disk)
            raise StageFailed(
                f"stage {stage.name}: cannot write {log_path}: {error.strerror or error}", 1
            ) from None
        finally:
            self._process = None

    def _execute(self, stage: Stage, directory: Path, identity: dict[str, Any], key: str) -> float:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StageFailed(f"cannot create {directory}: {error.strerror or error}", 1) from None
        _write_json(directory / STARTED_FILE, {"fingerprint": key, "identity": identity})
        (directory / STAGE_FILE).unlink(missing_ok=True)  # a damaged finished run, re-run in place
        returncode, seconds = self._launch(stage, directory / LOG_FILE)
        if returncode != 0:
            tail = (directory / LOG_FILE).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            if self.preempted and returncode in (-signal.SIGTERM, 128 + signal.SIGTERM):
                # Stopped by the notice the recipe passed on before it could save (starting up) or as it
                # exited (finished): no failure; the next run resumes it in place.
                raise StageFailed(
                    f"stage {stage.name} was stopped by the preemption notice (SIGTERM) before it could "
                    "save; rerun the recipe to resume it",
                    PREEMPTED_EXIT,
                )
            if not self.preempted:  # a preempted stage did not fail: its followers are preempted too
                failure = {"fingerprint": key, "session": self.session, "exit_status": returncode}
                _write_json(directory / FAILED_FILE, failure)
            if returncode == PREEMPTED_EXIT:
                message = f"stage {stage.name} was preempted after saving; rerun the recipe to resume it"
            else:
                reason = stage_reason(directory / LOG_FILE)
                message = (
                    f"stage {stage.name} failed (exit status {returncode})"
                    + (f": {reason}" if reason else "")
                    + f"; {directory / LOG_FILE} ends:"
                )
            raise StageFailed("\n".join([message, *tail]), returncode)
        run = uuid.uuid4().hex[:16]
        record = {
            "fingerprint": key,
            "identity": identity,
            "seconds": seconds,
            "finished": time.time(),
            "root": str(self.root),
            "run": run,
            "upstream_runs": {name: self.run_ids.get(name, "") for name in stage.after},
            "files": output_manifest(directory),
        }
        _write_json(directory / STAGE_FILE, record)
        self.run_ids[stage.name] = run
        (directory / STARTED_FILE).unlink(missing_ok=True)
        (directory / FAILED_FILE).unlink(missing_ok=True)
        self.log(f"stage {stage.name}: ran in {seconds:.1f} s")
        return seconds


def check_dag(stages: list[Stage]) -> None:
    """Names unique, every dependency earlier in the list (the list is the run order)."""
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"two stages named {stage.name}")
        unknown = [name for name in stage.after if name not in seen]
        if unknown:
            raise ValueError(f"stage {stage.name} runs after {unknown}, which do not come before it")
        seen.add(stage.name)
