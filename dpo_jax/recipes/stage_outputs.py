"""What a finished recipe stage left in DIR/<stage>: its outputs, verified before the stage is reused.

The engine (engine.py) keeps three bookkeeping files per stage; everything else the stage wrote, but
its checkpoints and data cache (resume state and a cache: a user may delete them to free space), is
an output. STAGE.json ("files") lists each output's size, modification time and sha256; before reuse
`damaged_outputs` checks that each is there with its size, and reads a file again only when its
modification time changed (a copied DIR), so a rerun of an intact recipe reads no weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STAGE_FILE = "STAGE.json"
STARTED_FILE = "STAGE.started.json"
FAILED_FILE = "STAGE.failed.json"  # the lead's word to the followers that a stage failed
BOOKKEEPING = (STAGE_FILE, STARTED_FILE, FAILED_FILE)
NOT_OUTPUTS = ("checkpoints", "data_cache")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_output(relative: Path) -> bool:
    top = relative.parts[0]
    return (
        top not in NOT_OUTPUTS
        and top not in BOOKKEEPING
        and not top.startswith("stage.")
        and not (len(relative.parts) == 1 and top.endswith(".tmp") and top[: -len(".tmp")] in BOOKKEEPING)
    )


def output_manifest(directory: Path) -> dict[str, list]:
    """Every file a stage wrote in `directory` -> [size, mtime_ns, sha256]; not its logs, its
    bookkeeping, its checkpoints or its data cache."""
    manifest = {}
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = file.relative_to(directory)
        if _is_output(relative):
            stat = file.stat()
            manifest[relative.as_posix()] = [stat.st_size, stat.st_mtime_ns, file_sha256(file)]
    return manifest


def damaged_outputs(directory: Path, manifest: dict[str, list]) -> list[str]:
    """How the outputs in `directory` differ from `manifest`: a file missing, of another size, or (when
    its modification time changed) of other contents. Empty when intact."""
    problems = []
    for name, (size, mtime_ns, sha256) in sorted(manifest.items()):
        file = directory / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file.stat().st_size != size:
            problems.append(f"{name} has {file.stat().st_size} bytes, not the {size} it was written with")
        elif file.stat().st_mtime_ns != mtime_ns and file_sha256(file) != sha256:
            problems.append(f"{name} was altered (its sha256 differs)")
    return problems


def _reroot(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return new + value[len(old) :] if value == old or value.startswith(old + os.sep) else value
    if isinstance(value, list):
        return [_reroot(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _reroot(v, old, new) for k, v in value.items()}
    return value


def reroot_stage_files(directory: Path, old_root: str, new_root: str) -> list[str]:
    """The stage's own JSON files (run_config.json, ...) with paths under `old_root` moved under
    `new_root`: a moved DIR's stages name their neighbours where they are now. -> the files changed."""
    changed = []
    for file in sorted(directory.glob("*.json")):
        if file.name in BOOKKEEPING:
            continue
        try:
            value = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        moved = _reroot(value, old_root, new_root)
        if moved != value:
            tmp = file.with_name(file.name + ".tmp")
            tmp.write_text(json.dumps(moved, indent=2), encoding="utf-8")
            os.replace(tmp, file)
            changed.append(file.name)
    return changed


def stage_reason(log_path: Path) -> str:
    """The one line a failed stage gave for its failure (`error: ...`, or its logger's ERROR line)."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("error: "):
            return text[len("error: ") :]
        if " ERROR " in text:
            return text.split(" ERROR ", 1)[1].split(": ", 1)[-1]
    return ""
