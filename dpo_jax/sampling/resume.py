"""Finished prompts of a sampling job, in an append-only JSON-lines file, so a killed job resumes.

One line per finished prompt: {"job": ..., "prompt": i, "prompt_hash": ..., "tokens": [[...] x K],
"mask": [[...] x K], "logps": [...]}. `job` is a digest of everything that fixes a prompt's completions
besides the prompt (settings, number of samples, seed, EOS and pad ids, and whatever identity of the
model the caller gives); `prompt_hash` is the prompt's own token ids. A line counts only when both
match, so a changed setting or prompt file samples afresh instead of reusing stale completions. Lines
are appended after each batch by process 0 and flushed to disk; a line cut short by the kill is
ignored (and counted in the log), and the next append starts on a line of its own. Because each prompt's random numbers come from (seed, prompt index,
sample index) only, the resumed job's completions equal those of a job that was never killed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import jax
import numpy as np

logger = logging.getLogger("dpo_jax")


def job_digest(**fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prompt_digest(ids: np.ndarray, mask: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(ids)[np.asarray(mask) == 1].astype(np.int64).tobytes()).hexdigest()[:16]


class FinishedPrompts:
    """The finished prompts recorded at `path` for `job` (None: nothing is recorded)."""

    def __init__(self, path: str | None, job: str):
        self.path, self.job = path, job
        self.records: dict[int, dict] = {}
        if path and os.path.exists(path):
            self._read()

    def _read(self) -> None:
        unreadable = 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    unreadable += 1  # the last line of a killed job
                    continue
                if isinstance(record, dict) and record.get("job") == self.job:
                    self.records[int(record["prompt"])] = record
        if unreadable:
            logger.warning("%s: %d unreadable line(s) ignored (a write cut short)", self.path, unreadable)
        if self.records:
            logger.info("%s: %d finished prompt(s) reused", self.path, len(self.records))

    def done(self, index: int, prompt_hash: str) -> dict | None:
        record = self.records.get(index)
        return record if record is not None and record["prompt_hash"] == prompt_hash else None

    def append(self, entries: list[dict]) -> None:
        """Record finished prompts ({"prompt", "prompt_hash", "tokens", "mask", "logps"} each)."""
        if not self.path or not entries or jax.process_index() != 0:
            return
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        lines = "".join(json.dumps({"job": self.job, **entry}) + "\n" for entry in entries)
        with open(self.path, "a+b") as f:
            if f.tell() > 0:  # a line cut short by a kill ends the file: the new lines start after it
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    lines = "\n" + lines
            f.write(lines.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
