"""On-disk cache of tokenised splits, so that a second run (or a restart) does not re-tokenise.

An entry is keyed by a hash of the split's full identity: source, data path or hub name, split, a
fingerprint of the data's contents, the tokenizer's name and fingerprint, the length and truncation
settings, the stage and the example limit. Any change to any of them is a different key, hence a miss.
Each entry is two files, `<key>.npz` (the token arrays) and `<key>.json` (identity and bad-input
report); both are written to temporary names and renamed, so readers on a shared filesystem never see
half an entry, and the JSON goes last, so its presence marks a complete entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from dpo_jax.data.report import BadInputReport
from dpo_jax.data.tokenization import TokenizedSplit

logger = logging.getLogger(__name__)

# Bump when the tokenised format or the tokenisation rule changes, to invalidate old entries.
# 2: bad rows numbered from 1, by physical line in JSONL; 3: SFT on preference data, one example per prompt
CACHE_FORMAT_VERSION = 3


def cache_key(identity: dict[str, Any]) -> str:
    payload = json.dumps({"format": CACHE_FORMAT_VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _paths(cache_dir: str, key: str) -> tuple[Path, Path]:
    root = Path(cache_dir).expanduser()
    return root / f"{key}.npz", root / f"{key}.json"


def load_cached_split(cache_dir: str, key: str) -> tuple[TokenizedSplit, BadInputReport] | None:
    arrays_path, meta_path = _paths(cache_dir, key)
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        with np.load(arrays_path) as arrays:
            split = TokenizedSplit.from_arrays(arrays)
        return split, BadInputReport.from_dict(meta["report"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring unreadable data cache entry %s (%s); re-tokenising", meta_path, error)
        return None


def save_cached_split(
    cache_dir: str, key: str, split: TokenizedSplit, report: BadInputReport, identity: dict[str, Any]
) -> None:
    arrays_path, meta_path = _paths(cache_dir, key)
    arrays_path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer: processes on different hosts may share a filesystem and a pid.
    suffix = f".tmp.{uuid.uuid4().hex}"
    tmp_arrays = arrays_path.with_name(arrays_path.name + suffix)
    tmp_meta = meta_path.with_name(meta_path.name + suffix)
    with open(tmp_arrays, "wb") as handle:
        np.savez(handle, **split.arrays())
    tmp_meta.write_text(
        json.dumps({"identity": identity, "report": report.to_dict()}, default=str), encoding="utf-8"
    )
    os.replace(tmp_arrays, arrays_path)
    os.replace(tmp_meta, meta_path)
