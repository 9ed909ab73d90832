"""Raw tables: where the rows of one split come from, before any dataset-specific parsing.

`open_split(path, split)` resolves a data path to a `RawTable`:
- an existing local file (JSONL, JSONL.gz, JSON array, Parquet): the file itself;
- an existing local directory: the files of that split inside it, found by name (`train.jsonl`,
  `test.parquet`, `helpful-base/train.jsonl.gz`, hub-style shards `train-00000-of-00002.parquet`, or any
  file under a folder named after the split);
- otherwise a Hugging Face hub dataset name, loaded with `datasets.load_dataset(name, split=...)`.

A table knows its columns (checked against what the source needs before any row is parsed), a
fingerprint of its contents (for the tokenisation cache and resume checks) and yields
`(RowLocation, record)` pairs. Local JSON is parsed by hand, not through `datasets`, so that a row with a
wrong type is counted as a bad row instead of breaking Arrow's schema inference for the whole file.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dpo_jax import MissingInputError, UserError
from dpo_jax.data.report import INVALID_JSON, INVALID_UTF8, BadRow, RowLocation

# A record is either a dict or the BadRow that parsing it produced (invalid JSON, not an object).
Record = dict[str, Any] | BadRow

_JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
_PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = _JSON_SUFFIXES + _PARQUET_SUFFIXES
# Columns are taken from the first records of each JSON file; a column absent from all of them is a
# schema error reported at start-up, one absent from a later row is a counted bad row.
_SCHEMA_SCAN_RECORDS = 1000
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


FIXTURE_PREFIX = "fixture:"
# Sources that read another source's fixture (the same raw dataset, parsed differently).
_FIXTURE_ALIASES = {"imdb_prefixes": "imdb"}


def fixture_dir(name: str) -> str:
    """The shipped fixture directory of a source ("hh", "local", "local_ranked", ...).

    A data path "fixture:<name>" means this directory; the `:tiny` configs use it.
    """
    path = FIXTURES_DIR / _FIXTURE_ALIASES.get(name, name)
    if not path.is_dir():
        available = sorted(p.name for p in FIXTURES_DIR.iterdir() if p.is_dir())
        raise MissingInputError(f"no fixture {name!r} in {FIXTURES_DIR} (available: {available})")
    return str(path)


@dataclasses.dataclass(frozen=True)
class RawTable:
    """One split's rows, with the identity needed to cache and to check resumes."""

    description: str
    columns: frozenset[str]
    fingerprint: str
    _iterate: Callable[[], Iterator[tuple[RowLocation, Record]]]

    def rows(self) -> Iterator[tuple[RowLocation, Record]]:
        return self._iterate()

    def require_columns(self, required: frozenset[str] | set[str]) -> None:
        missing = sorted(set(required) - self.columns)
        if missing:
            raise UserError(
                f"{self.description} lacks the column(s) {missing} needed by this source "
                f"(found columns: {sorted(self.columns)})"
            )


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def looks_like_hub_name(path: str) -> bool:
    return bool(_HUB_NAME.match(path)) and not _suffix(Path(path))


def _open_bytes(path: Path):
    # Bytes, decoded line by line: one non-UTF-8 byte is then one bad row, not a failed run.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


_BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark, which Windows editors write at the start of a file


def _json_records(path: Path) -> Iterator[tuple[RowLocation, Record]]:
    """Records with their 1-based physical line (JSONL) or element number (a JSON array)."""
    with _open_bytes(path) as handle:
        start = len(_BOM) if handle.read(len(_BOM)) == _BOM else 0
        handle.seek(start)
        first = handle.read(1)
        while first and first.isspace():
            first = handle.read(1)
        handle.seek(start)
        if first == b"[":
            yield from _json_array_records(path, handle.read())
            return
        for number, raw_line in enumerate(handle, start=1):
            location = RowLocation(str(path), number, "line")
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                detail = f"byte {error.start + 1} of the line ({raw_line[error.start : error.end]!r}): {error.reason}"
                yield location, BadRow(INVALID_UTF8, "<line>", detail)
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield location, BadRow(INVALID_JSON, "<line>", str(error))
            else:
                yield location, _as_object(record)


def _json_array_records(path: Path, raw: bytes) -> Iterator[tuple[RowLocation, Record]]:
    # A JSON array cannot be streamed line by line; such files are small in practice. One broken byte
    # or bracket makes the whole array unreadable, so it is one error naming where, not a bad row.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UserError(
            f"{path} line {line}: not UTF-8 ({error.reason}); a JSON array is read whole"
        ) from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path} line {error.lineno} column {error.colno}: not a valid JSON array ({error.msg}); "
            "a JSON array is read whole (a truncated file?)"
        ) from None
    for index, record in enumerate(records):
        yield RowLocation(str(path), index + 1, "record"), _as_object(record)


def _as_object(record: Any) -> Record:
    if isinstance(record, dict):
        return record
    return BadRow(INVALID_JSON, "<line>", f"expected a JSON object, got {type(record).__name__}")


def _json_columns(path: Path) -> set[str]:
    """The columns of the first records; a file without one object among them is an error saying why
    (empty, or every line invalid with the first reason), not an empty column set."""
    columns: set[str] = set()
    first_bad = None
    scanned = 0
    records = _json_records(path)
    try:
        for location, record in itertools.islice(records, _SCHEMA_SCAN_RECORDS):
            scanned += 1
            if isinstance(record, dict):
                columns.update(record)
            elif first_bad is None:
                first_bad = (location, record)
    finally:
        records.close()  # closes the file now rather than whenever the generator is collected
    if scanned == 0:
        raise UserError(f"{path}: the file is empty (no JSON records)")
    if not columns and first_bad is not None:
        location, bad = first_bad
        how_many = f"all {scanned}" if scanned < _SCHEMA_SCAN_RECORDS else f"the first {scanned}"
        raise UserError(f"{path}: {how_many} {location.unit}s are invalid; the first, {location}: {bad}")
    return columns


def _parquet_columns(path: Path) -> set[str]:
    import pyarrow.parquet as pq

    return set(pq.ParquetFile(path).schema_arrow.names)


def _parquet_records(path: Path) -> Iterator[tuple[RowLocation, Record]]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield RowLocation(str(path), row), record


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_table(files: list[Path], description: str) -> RawTable:
    columns: set[str] | None = None
    digest = hashlib.sha256()
    for path in files:
        file_columns = _parquet_columns(path) if _suffix(path) in _PARQUET_SUFFIXES else _json_columns(path)
        # Columns every file has: a column missing from one file of a split is a schema error.
        columns = file_columns if columns is None else columns & file_columns
        digest.update(path.name.encode() + b"\0" + _file_digest(path).encode())

    def iterate() -> Iterator[tuple[RowLocation, Record]]:
        for path in files:
            if _suffix(path) in _PARQUET_SUFFIXES:
                yield from _parquet_records(path)
            else:
                yield from _json_records(path)

    return RawTable(description, frozenset(columns or ()), "sha256:" + digest.hexdigest(), iterate)


def _split_files(directory: Path, split: str) -> list[Path]:
    shard = re.compile(rf"^{re.escape(split)}-\d+-of-\d+$")
    found = []
    for path in sorted(directory.rglob("*")):
        suffix = _suffix(path)
        if not suffix or not path.is_file():
            continue
        stem = path.name[: -len(suffix)]
        in_split_folder = split in path.relative_to(directory).parts[:-1]
        if stem == split or shard.match(stem) or in_split_folder:
            found.append(path)
    return found


def _hub_table(name: str, split: str, hub_config: str | None) -> RawTable:
    import datasets

    args = (name,) if hub_config is None else (name, hub_config)
    try:
        dataset = datasets.load_dataset(*args, split=split)
    except Exception as error:
        raise MissingInputError(
            f"{name!r} is not a local file or directory, and loading it from the Hugging Face hub "
            f"(split {split!r}) failed: {error}"
        ) from error
    description = f"hub:{name}" + (f"[{hub_config}]" if hub_config else "") + f":{split}"
    fingerprint = getattr(dataset, "_fingerprint", None)
    if not fingerprint:
        fingerprint = hashlib.sha256(json.dumps(list(dataset), default=str).encode()).hexdigest()

    def iterate() -> Iterator[tuple[RowLocation, Record]]:
        for index, record in enumerate(dataset):
            yield RowLocation(description, index + 1), dict(record)

    return RawTable(description, frozenset(dataset.column_names), f"hub:{fingerprint}", iterate)


def check_data_path(path: str) -> None:
    """A local data path that does not exist, said before a run creates anything (a fixture or a hub
    dataset name passes: the hub is asked when the data is read)."""
    if path.startswith(FIXTURE_PREFIX) or Path(path).expanduser().exists() or looks_like_hub_name(path):
        return
    raise MissingInputError(f"data path {path!r} does not exist and is not a hub dataset name")


def open_split(
    path: str, split: str, *, hub_config: str | None = None, single_file_ok: bool = True
) -> RawTable:
    """The rows of `split` at `path` (a local file or directory, "fixture:<name>", or a hub dataset name).

    `split` may itself be the path of an existing file, which then is the split. A single-file `path`
    has no splits; it is accepted only where `single_file_ok` (the caller's train split).
    """
    if path.startswith(FIXTURE_PREFIX):
        path = fixture_dir(path[len(FIXTURE_PREFIX) :])
    split_as_path = Path(split).expanduser()
    if _suffix(split_as_path) and split_as_path.is_file():
        return _local_table([split_as_path], str(split_as_path))
    local = Path(path).expanduser()
    if local.is_file():
        if not _suffix(local):
            raise UserError(f"{local}: unsupported file type (supported: {', '.join(SUPPORTED_SUFFIXES)})")
        if not single_file_ok:
            raise UserError(
                f"{local} is a single file, which holds no {split!r} split: point the path at a directory "
                f"with one file per split, give this split as a file path, or leave it empty"
            )
        return _local_table([local], str(local))
    if local.is_dir():
        files = _split_files(local, split)
        if not files:
            present = sorted(str(p.relative_to(local)) for p in local.rglob("*") if _suffix(p))
            raise MissingInputError(
                f"{local} has no files for split {split!r} (looked for {split}.jsonl, {split}.parquet, "
                f"{split}-NNNNN-of-NNNNN.* or a {split}/ folder; found {present or 'no data files'})"
            )
        return _local_table(files, f"{local} [{split}]")
    if not looks_like_hub_name(path):
        raise MissingInputError(f"data path {path!r} does not exist and is not a hub dataset name")
    return _hub_table(path, split, hub_config)
