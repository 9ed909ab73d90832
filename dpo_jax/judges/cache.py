"""An on-disk cache of judge replies, so that a rerun or a crashed run never pays twice.

One JSON line per reply, appended and flushed the moment the reply arrives (a crash loses at most the
request in flight). The key is a hash of (judge identity, prompt, response shown as A, response shown as
B): the order is part of the key, since a judge may answer differently when the responses are swapped.
The judge identity includes everything that changes the answer (model, endpoint, prompt template,
sampling settings). A torn last line, left by a crash mid-write, is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


def verdict_key(judge_identity: dict, prompt: str, response_a: str, response_b: str) -> str:
    payload = json.dumps(
        {"judge": judge_identity, "prompt": prompt, "a": response_a, "b": response_b},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class VerdictCache:
    """A thread-safe append-only JSONL map from `verdict_key` to a reply record (a dict)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self._entries[record["key"]] = record["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    logger.warning("%s line %d: not a cache record (torn write?); ignored", self.path, number)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, reply: dict) -> None:
        line = json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n"
        with self._lock:
            self._entries[key] = reply
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
