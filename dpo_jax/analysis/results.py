"""Writing evaluation results so that nothing incomplete ever looks complete.

Each file is written to a temporary name beside its destination and renamed into place once whole
(a rename is atomic on POSIX file systems): a crash or an error leaves the previous result or none.
On several processes (a multi-host run, every process computing the same results in lockstep) only
process 0 writes (`config.runtime.writes_outputs`); the others' writes return the path and do nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from dpo_jax.config.command_line import jsonable
from dpo_jax.config.runtime import writes_outputs


def _write_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    if not writes_outputs():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_json(path, record: dict) -> Path:
    return _write_atomic(path, json.dumps(jsonable(record), indent=2, sort_keys=True) + "\n")


def write_jsonl(path, records: Iterable[dict]) -> Path:
    return _write_atomic(path, "".join(json.dumps(jsonable(r), ensure_ascii=False) + "\n" for r in records))
