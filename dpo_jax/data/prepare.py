"""`build_datasets`: from a data config and a tokenizer to tokenised train/eval splits, with reports.

Per split: open the raw table (local path or hub), check its columns, look the split up in the cache,
and on a miss walk the rows through the source adapter, choose the responses the stage needs (for SFT
on preference data: one example per distinct prompt, `sft_set`), tokenise, and store the result. Everything the walk rejects is counted in that split's `BadInputReport`, logged
once here at start-up, and exposed through `PreparedData.report_metrics()`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from dpo_jax import UserError
from dpo_jax.data.cache import cache_key, load_cached_split, save_cached_split
from dpo_jax.data.local_schemas import ChatRenderer, local_schema
from dpo_jax.data.readers import RawTable, open_split
from dpo_jax.data.report import (
    DUPLICATE_PROMPT,
    IDENTICAL_RESPONSES,
    RESPONSE_COUNT_MISMATCH,
    BadInputReport,
    BadRow,
    RowLocation,
)
from dpo_jax.data.sft_set import one_example_per_prompt
from dpo_jax.data.sources import PAIRS, PROMPT_ONLY, RANKED, SINGLE, SOURCES, Adapter, Example, ParseOptions
from dpo_jax.data.tokenization import TRUNCATION_MODES, TokenizedSplit, TokenizeSettings, tokenize_examples
from dpo_jax.data.tokenizer import tokenizer_fingerprint

logger = logging.getLogger(__name__)

STAGES = ("sft", "dpo", "prompts")
LOCAL_SOURCE = "local"


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The data config, read once with its defaults filled in and checked."""

    source: str
    path: str
    train_split: str
    eval_split: str  # "" = no eval set
    max_length: int
    max_prompt_length: int
    truncation_mode: str
    cache_dir: str  # "" = no cache
    max_train_examples: int
    max_eval_examples: int
    parse_options: ParseOptions


_MISSING = object()


def _get(config: Any, name: str, default: Any = _MISSING) -> Any:
    value = getattr(config, name, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise UserError(f"data config has no {name!r} field")
        return default
    return value


def read_settings(config: Any) -> DataSettings:
    source = _get(config, "source")
    if source not in SOURCES and source != LOCAL_SOURCE:
        raise UserError(f"unknown data source {source!r}; known: {sorted(SOURCES) + [LOCAL_SOURCE]}")
    spec = SOURCES.get(source)
    path = _get(config, "path", "") or (spec.hub_name if spec else "")
    if not path:
        raise UserError("data source 'local' needs data.path (a file or a directory of split files)")
    max_length = int(_get(config, "max_length"))
    max_prompt_length = int(_get(config, "max_prompt_length"))
    if not 0 < max_prompt_length <= max_length:
        raise UserError(f"need 0 < max_prompt_length ({max_prompt_length}) <= max_length ({max_length})")
    truncation_mode = _get(config, "truncation_mode", "") or (
        spec.default_truncation if spec else "keep_start"
    )
    if truncation_mode not in TRUNCATION_MODES:
        raise UserError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    options = ParseOptions(
        shp_min_score_ratio=float(_get(config, "shp_min_score_ratio", 2.0)),
        imdb_prefix_min_words=int(_get(config, "imdb_prefix_min_words", 2)),
        imdb_prefix_max_words=int(_get(config, "imdb_prefix_max_words", 8)),
        hh_single_turn=_get(config, "hh_single_turn", False),
    )
    if not isinstance(options.hh_single_turn, bool):
        raise UserError(f"data.hh_single_turn={options.hh_single_turn!r} must be a bool")
    if options.hh_single_turn and source != "hh":
        raise UserError(f"data.hh_single_turn=True is for data.source 'hh' (Anthropic HH), not {source!r}")
    if not 0 < options.imdb_prefix_min_words <= options.imdb_prefix_max_words:
        raise UserError("need 0 < imdb_prefix_min_words <= imdb_prefix_max_words")
    return DataSettings(
        source=source,
        path=str(path),
        train_split=str(_get(config, "train_split", spec.default_train_split if spec else "train")),
        eval_split=str(_get(config, "eval_split", spec.default_eval_split if spec else "test")),
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        truncation_mode=truncation_mode,
        cache_dir=str(_get(config, "cache_dir", "")),
        max_train_examples=int(_get(config, "max_train_examples", 0)),
        max_eval_examples=int(_get(config, "max_eval_examples", 0)),
        parse_options=options,
    )


@dataclasses.dataclass
class PreparedData:
    """The tokenised splits and what is known about them; input to the loaders."""

    source: str
    stage: str
    train: TokenizedSplit
    eval: TokenizedSplit | None
    num_responses: int  # K
    prompt_only: bool
    pad_id: int
    eos_id: int
    max_length: int
    train_report: BadInputReport
    eval_report: BadInputReport | None
    fingerprint: str  # identity of the training data, checked on resume
    eval_fingerprint: str | None
    cache_hits: dict[str, bool]

    def report_metrics(self) -> dict[str, int]:
        """Bad-input counts for the run's metrics: `data/<train|eval>/bad/<reason>`, ... (see report.py)."""
        out = self.train_report.metrics()
        if self.eval_report is not None:
            out.update(self.eval_report.metrics())
        return out


def _check_stage(kind: str, stage: str, source: str) -> None:
    if stage not in STAGES:
        raise UserError(f"stage must be one of {STAGES}, got {stage!r}")
    if kind == PROMPT_ONLY and stage != "prompts":
        raise UserError(
            f"source {source!r} holds prompts only (for sampling): use stage 'prompts', not {stage!r}"
        )
    if kind == SINGLE and stage == "dpo":
        raise UserError(f"source {source!r} has one response per prompt; stage 'dpo' needs two or more")


def _walk_rows(table: RawTable, adapter: Adapter, options: ParseOptions, report: BadInputReport):
    for location, record in table.rows():
        report.rows_read += 1
        try:
            if isinstance(record, BadRow):
                raise record
            example = adapter(record, options)
        except BadRow as error:
            report.record(error, location)
            continue
        except ValueError as error:
            raise UserError(f"{location}: {error}") from error
        yield location, example


class _ResponseSelector:
    """Gives every example the responses the stage uses, the same number K for the whole dataset."""

    def __init__(self, stage: str, kind: str, num_responses: int | None):
        self.stage = stage
        self.num_responses = num_responses
        if stage in ("sft", "prompts"):
            self.num_responses = 1
        elif kind == PAIRS:
            self.num_responses = 2
        self._seen_prompts: set[str] = set()

    def __call__(self, rows: Iterable[tuple[RowLocation, Example]], report: BadInputReport) -> Iterator:
        for location, example in rows:
            try:
                yield location, self._select(example)
            except BadRow as error:
                report.record(error, location)

    def _select(self, example: Example) -> Example:
        if self.stage == "prompts":
            # Sampling once per distinct prompt; HH and SHP repeat a prompt for each of its pairs.
            if example.prompt in self._seen_prompts:
                raise BadRow(DUPLICATE_PROMPT, "prompt")
            self._seen_prompts.add(example.prompt)
            return Example(example.prompt, ())
        if self.stage == "sft":
            return Example(example.prompt, example.responses[:1])
        if self.num_responses is None:
            # A ranked source takes K from its first example; later ones must match (fixed shapes).
            if len(example.responses) < 2:
                raise BadRow(RESPONSE_COUNT_MISMATCH, "responses", "a preference example needs two or more")
            self.num_responses = len(example.responses)
        if len(example.responses) != self.num_responses:
            raise BadRow(
                RESPONSE_COUNT_MISMATCH,
                "responses",
                f"{len(example.responses)} responses where this dataset has {self.num_responses}",
            )
        if len(set(example.responses)) < len(example.responses):
            raise BadRow(IDENTICAL_RESPONSES, "responses", "two ranked responses are the same text")
        return example


def _source_for(settings: DataSettings, table: RawTable) -> tuple[Adapter, str]:
    spec = SOURCES.get(settings.source)
    if spec is not None:
        table.require_columns(spec.required_columns)
        return spec.adapter, spec.kind
    required, adapter, kind = local_schema(table.columns, table.description)
    table.require_columns(required)
    return adapter, kind


def read_examples(data_config: Any, *, split: str = "eval", limit: int = 0, unique_prompts: bool = False):
    """The text examples (prompt, responses best first) of the train or eval split, untokenised.

    For evaluations that sample prompts and compare against the dataset's own responses (win rates,
    IMDb prefixes). Bad rows are skipped and logged as in `build_datasets`. `limit` > 0 keeps the first
    `limit` usable examples; `unique_prompts` keeps the first example of each prompt (HH repeats a
    prompt for each of its pairs). Returns (examples, report).
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    settings = read_settings(data_config)
    split_name = settings.train_split if split == "train" else settings.eval_split
    if not split_name:
        raise ValueError(f"data config {settings.source!r} has no {split} split")
    spec = SOURCES.get(settings.source)
    table = open_split(
        settings.path, split_name, hub_config=spec.hub_config if spec else None, single_file_ok=split == "train"
    )
    adapter, _ = _source_for(settings, table)
    report = BadInputReport(split=split)
    examples, seen = [], set()
    for _, example in _walk_rows(table, adapter, settings.parse_options, report):
        if unique_prompts and example.prompt in seen:
            continue
        seen.add(example.prompt)
        examples.append(example)
        report.examples_kept += 1
        if limit and len(examples) >= limit:
            break
    report.log(logger, source=settings.source)
    return examples, report


def _split_identity(
    settings: DataSettings, tokenizer, stage: str, split_name: str, table: RawTable, limit: int, num_responses
) -> tuple[str, dict[str, Any]]:
    """(resume fingerprint, cache identity) of one tokenised split.

    Both cover everything that decides the arrays. The fingerprint leaves out where the data and the
    tokenizer were read from, so a moved copy of the same data still resumes; the cache identity adds them.
    """
    content = {
        "source": settings.source,
        "split": split_name,
        "data": table.fingerprint,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "max_length": settings.max_length,
        "max_prompt_length": settings.max_prompt_length,
        "truncation_mode": settings.truncation_mode,
        "stage": stage,
        "limit": limit,
        "num_responses": num_responses,
        "parse_options": dataclasses.asdict(settings.parse_options),
    }
    fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return fingerprint, {
        **content,
        "path": settings.path,
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
    }


def _prepare_split(
    settings: DataSettings,
    tokenizer,
    stage: str,
    *,
    role: str,
    num_responses: int | None,
) -> tuple[TokenizedSplit, BadInputReport, str, bool]:
    """(tokenised split, its report, its fingerprint, whether it came from the cache)."""
    split_name = settings.train_split if role == "train" else settings.eval_split
    spec = SOURCES.get(settings.source)
    if spec is not None:  # checked before any download; a local schema is known once its table is open
        _check_stage(spec.kind, stage, settings.source)
    table = open_split(
        settings.path,
        split_name,
        hub_config=spec.hub_config if spec else None,
        single_file_ok=role == "train",
    )
    adapter, kind = _source_for(settings, table)
    if spec is None:
        _check_stage(kind, stage, settings.source)
    limit = settings.max_train_examples if role == "train" else settings.max_eval_examples
    fingerprint, identity = _split_identity(
        settings, tokenizer, stage, split_name, table, limit, num_responses
    )
    key = cache_key(identity)
    if settings.cache_dir:
        cached = load_cached_split(settings.cache_dir, key)
        if cached is not None:
            cached[1].origin = table.description  # the same content, maybe read from elsewhere
            return cached[0], cached[1], fingerprint, True
    report = BadInputReport(split=role, origin=table.description)
    options = dataclasses.replace(settings.parse_options, sft=stage == "sft")
    if getattr(tokenizer, "chat_template", None):
        options = dataclasses.replace(options, chat_renderer=ChatRenderer(tokenizer))
    rows = _walk_rows(table, adapter, options, report)
    if stage == "sft" and kind in (PAIRS, RANKED):
        rows = one_example_per_prompt(rows, report)
    selector = _ResponseSelector(stage, kind, num_responses)
    tokenize_settings = TokenizeSettings(
        settings.max_length,
        settings.max_prompt_length,
        settings.truncation_mode,
        prompt_only=stage == "prompts",
    )
    split = tokenize_examples(
        selector(rows, report),
        tokenizer,
        tokenize_settings,
        report=report,
        limit=limit,
        num_responses=num_responses,
    )
    if settings.cache_dir:
        save_cached_split(settings.cache_dir, key, split, report, identity)
    return split, report, fingerprint, False


def build_datasets(data_config: Any, tokenizer, *, stage: str, cache_dir: str | None = None) -> PreparedData:
    """Tokenised train and eval splits for `stage` ("sft", "dpo" or "prompts"); see the package docstring.

    `cache_dir`, when given, replaces `data_config.cache_dir` (the trainer points it into the workdir).
    """
    if stage not in STAGES:
        raise UserError(f"stage must be one of {STAGES}, got {stage!r}")
    settings = read_settings(data_config)
    if cache_dir is not None:
        settings = dataclasses.replace(settings, cache_dir=cache_dir)
    train, train_report, fingerprint, train_hit = _prepare_split(
        settings, tokenizer, stage, role="train", num_responses=None
    )
    if train.num_examples == 0:
        train_report.log(logger, source=settings.source)
        raise UserError(f"no usable training examples in {settings.path!r}: {train_report.summary()}")
    eval_split = eval_report = eval_fingerprint = None
    eval_hit = False
    if settings.eval_split:
        eval_split, eval_report, eval_fingerprint, eval_hit = _prepare_split(
            settings, tokenizer, stage, role="eval", num_responses=train.num_responses
        )
        if eval_split.num_examples == 0:
            eval_report.log(logger, source=settings.source)
            raise UserError(
                f"no usable eval examples in split {settings.eval_split!r}: {eval_report.summary()}"
            )
    for report, hit in ((train_report, train_hit), (eval_report, eval_hit)):
        if report is not None:
            report.log(logger, source=settings.source)
            logger.info(
                "data %s %s: tokenised split %s",
                settings.source,
                report.split,
                "from cache" if hit else "built",
            )
    return PreparedData(
        source=settings.source,
        stage=stage,
        train=train,
        eval=eval_split,
        num_responses=train.num_responses,
        prompt_only=stage == "prompts",
        pad_id=int(tokenizer.pad_token_id),
        eos_id=int(tokenizer.eos_token_id),
        max_length=settings.max_length,
        train_report=train_report,
        eval_report=eval_report,
        fingerprint=fingerprint,
        eval_fingerprint=eval_fingerprint,
        cache_hits={"train": train_hit, "eval": eval_hit},
    )
