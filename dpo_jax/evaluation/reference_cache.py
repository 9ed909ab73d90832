"""Reference log-probs computed once per (reference weights, data, tokenisation, lengths), reused after.

Every run of a DPO beta sweep starts from the same reference on the same pairs, so its reference
log-probs are the same arrays; `precompute_reference_logps` pays one pass over the data for each
run. This module keeps the arrays in a persistent cache keyed by a fingerprint of exactly what
decides them:

- the reference weights: the sha256 of the weight and config files of a local model directory
  (a finished workdir's export included), the architecture and seed of a "random" model, or the
  hub name of a hub model (hub names have no pinned revision in the config: a model republished
  under the same name is not noticed; use a local copy when that matters);
- the data: the tokenised splits' fingerprints (`PreparedData.fingerprint`: source, data content,
  tokenizer, max_length, max_prompt_length, truncation mode, stage, example limits, K);
- the numerics: the reference's parameter dtype, the compute dtype and `length_normalize`.

Values are stored per example ([N, K] per split, row i = example i), so the row layout (shared
prompt, packing) is not part of the key. An entry is `<key>.npz` and `<key>.json` (the manifest: the
identity, the example count per split and the sha256 of the npz), both written under temporary names
and renamed, the manifest last. An entry without manifest, or whose npz does not match the
manifest's checksum and counts, is partial or corrupt: it is reported and recomputed, never read.

Multi-host: the pass is a collective program, so the processes agree first (reuse only when every
process read a valid entry); process 0 alone writes. A cache directory on a filesystem all hosts
share makes the entry reusable by every host; on per-host disks the other hosts recompute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dpo_jax.evaluation.passes import precompute_reference_logps

logger = logging.getLogger("dpo_jax")

# Bump when what is stored, or how it is computed, changes.
REFERENCE_LOGPS_FORMAT = 1
STATUS_FILENAME = "reference_logps.json"  # in the run's workdir: computed or reused, and the entry
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".json")
_SPLITS = ("train", "eval")


def default_logps_cache_dir(config, workdir: str) -> str:
    """config.reference.logps_cache_dir, else `reference_logps_cache` beside the run.

    Beside, not inside: the runs of a sweep (launch/sweep.py's ROOT/beta_X, a recipe's DIR/<stage>)
    share their parent, so they share the entries. A gs:// workdir gets a per-user local cache.
    """
    if config.reference.logps_cache_dir:
        return config.reference.logps_cache_dir
    if "://" in workdir:
        return os.path.expanduser("~/.cache/dpo_jax/reference_logps")
    return str(Path(os.path.abspath(workdir)).parent / "reference_logps_cache")


def _hash_files(directory: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name.endswith(_WEIGHT_SUFFIXES):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
            digests[path.name] = digest.hexdigest()
    return digests


def reference_weights_identity(config) -> dict[str, Any]:
    """What names the reference's weights: file hashes, a random model's recipe, or a hub name."""
    from dpo_jax.models.loading import resolve_model_path

    name = config.reference.name_or_path or config.model.name_or_path
    if name == "random":
        return {"random": config.model.random_init_config.to_dict(), "seed": config.seed}
    path = resolve_model_path(name)
    if os.path.isdir(path):
        files = _hash_files(Path(path))
        if not any(n.endswith((".safetensors", ".bin", ".msgpack")) for n in files):
            raise ValueError(f"{path}: no weight files (*.safetensors, *.bin, *.msgpack) to fingerprint")
        return {"files": files}
    return {"hub": name}


def reference_logps_identity(config, prepared) -> dict[str, Any]:
    return {
        "format": REFERENCE_LOGPS_FORMAT,
        "reference": reference_weights_identity(config),
        "param_dtype": config.reference.param_dtype,
        "dtype": config.model.dtype,
        "length_normalize": bool(config.length_normalize),
        "train": prepared.fingerprint,
        "eval": prepared.eval_fingerprint if prepared.eval is not None else None,
        "num_responses": prepared.num_responses,
    }


def identity_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _entry_paths(cache_dir: str, key: str) -> tuple[Path, Path]:
    root = Path(cache_dir).expanduser()
    return root / f"{key}.npz", root / f"{key}.json"


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_counts(prepared) -> dict[str, int]:
    return {s: getattr(prepared, s).num_examples for s in _SPLITS if getattr(prepared, s) is not None}


def load_entry(cache_dir: str, key: str, expected: dict[str, int]) -> dict[str, np.ndarray] | None:
    """The [N, K] arrays of a complete, intact entry; None (with a warning for a damaged one) otherwise."""
    arrays_path, manifest_path = _entry_paths(cache_dir, key)
    if not manifest_path.exists():
        if arrays_path.exists():
            logger.warning(
                "reference log-prob cache: %s has no manifest (a partial write); recomputing", arrays_path
            )
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if _file_sha256(arrays_path) != manifest["sha256"]:
            raise ValueError("checksum mismatch")
        with np.load(arrays_path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        counts = {name: int(a.shape[0]) for name, a in arrays.items()}
        if counts != manifest["counts"] or counts != expected:
            raise ValueError(f"example counts {counts}, manifest {manifest['counts']}, data {expected}")
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise ValueError("non-finite values")
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning(
            "reference log-prob cache: ignoring damaged entry %s (%s); recomputing", arrays_path, error
        )
        return None
    return arrays


def save_entry(cache_dir: str, key: str, arrays: dict[str, np.ndarray], identity: dict[str, Any]) -> None:
    arrays_path, manifest_path = _entry_paths(cache_dir, key)
    arrays_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp.{uuid.uuid4().hex}"  # unique per writer: hosts may share a filesystem and a pid
    tmp_arrays = arrays_path.with_name(arrays_path.name + suffix)
    tmp_manifest = manifest_path.with_name(manifest_path.name + suffix)
    with open(tmp_arrays, "wb") as handle:
        np.savez(handle, **arrays)
    manifest = {
        "identity": identity,
        "counts": {name: int(a.shape[0]) for name, a in arrays.items()},
        "sha256": _file_sha256(tmp_arrays),
    }
    tmp_manifest.write_text(json.dumps(manifest, default=str), encoding="utf-8")
    os.replace(tmp_arrays, arrays_path)
    os.replace(tmp_manifest, manifest_path)  # last: its presence marks a complete entry


def _all_processes_agree(local: bool) -> bool:
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(local, np.int32))))


@dataclasses.dataclass(frozen=True)
class ReferenceLogps:
    prepared: Any  # the data with `reference_logps` attached to its splits
    status: str  # "computed" | "reused"
    key: str | None  # the cache entry, None when the cache is off
    path: str | None


def attach_reference_logps(
    prepared, step, reference, config, mesh, batch_size: int, *, workdir: str
) -> ReferenceLogps:
    """`precompute_reference_logps`, through the cache when config.reference.cache_logps is on.

    Writes WORKDIR/reference_logps.json (status, key, entry path) so a sweep or a recipe can count
    how many of its runs computed the arrays and how many reused them. A run resumed in its workdir
    stays "computed" when the entry it reads back is the one it computed before it was stopped.
    """
    if not config.reference.cache_logps:
        result = ReferenceLogps(
            precompute_reference_logps(prepared, step, reference, config, mesh, batch_size),
            "computed",
            None,
            None,
        )
    else:
        result = _through_cache(prepared, step, reference, config, mesh, batch_size, workdir)
    if jax.process_index() == 0:
        status_file = Path(_local(workdir), STATUS_FILENAME)
        status = {"status": result.status, "key": result.key, "path": result.path}
        if result.status == "reused" and _recorded_status(status_file) == {**status, "status": "computed"}:
            status["status"] = "computed"  # a resumed run reads back the entry it computed itself
        status_file.write_text(json.dumps(status), encoding="utf-8")
    return result


def _recorded_status(status_file: Path) -> dict | None:
    try:
        return json.loads(status_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _local(workdir: str) -> str:
    return workdir if "://" in workdir else os.path.abspath(workdir)


def _through_cache(prepared, step, reference, config, mesh, batch_size, workdir) -> ReferenceLogps:
    cache_dir = default_logps_cache_dir(config, str(workdir))
    identity = reference_logps_identity(config, prepared)
    key = identity_key(identity)
    path = str(_entry_paths(cache_dir, key)[0])
    stored = load_entry(cache_dir, key, _expected_counts(prepared))
    if _all_processes_agree(stored is not None):
        logger.info("reference log-probs: reused %s", path)
        splits = {s: getattr(prepared, s).with_extras(reference_logps=stored[s]) for s in stored}
        return ReferenceLogps(dataclasses.replace(prepared, **splits), "reused", key, path)
    computed = precompute_reference_logps(prepared, step, reference, config, mesh, batch_size)
    if jax.process_index() == 0:
        arrays = {s: getattr(computed, s).extras["reference_logps"] for s in _expected_counts(computed)}
        save_entry(cache_dir, key, arrays, identity)
    logger.info("reference log-probs: computed and stored in %s", path)
    return ReferenceLogps(computed, "computed", key, path)
