"""Bad-input accounting: every raw row that does not become a training example is counted here.

A row is rejected by raising `BadRow(reason, field)` anywhere in parsing or tokenisation; the code that
walks the rows catches it and records it in a `BadInputReport` with the file and row it came from.
The report keeps a count per reason and the first few rows per reason (file, row, field, detail), is
logged once at start-up, flattens into run metrics, and round-trips through JSON for the cache.
Nothing is dropped without passing through here.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

# Reasons a row is rejected. Adapters may only use these, so that metrics have a stable vocabulary.
MISSING_FIELD = "missing_field"
EMPTY_FIELD = "empty_field"
NOT_A_STRING = "not_a_string"
BAD_VALUE = "bad_value"
INVALID_JSON = "invalid_json"
INVALID_UTF8 = "invalid_utf8"
IDENTICAL_RESPONSES = "identical_responses"
PROMPT_MISMATCH = "prompt_mismatch"
NO_ASSISTANT_TURN = "no_assistant_turn"
CHAT_TEMPLATE_MISMATCH = "chat_template_mismatch"
RESPONSE_COUNT_MISMATCH = "response_count_mismatch"
EOS_IN_TEXT = "eos_in_text"
NO_ROOM_FOR_RESPONSE = "no_room_for_response"
# Rows that are well formed but excluded on purpose (a documented filter, not a data error).
FILTERED_SCORE_RATIO = "filtered_score_ratio"
FILTERED_NOT_SINGLE_TURN = "filtered_not_single_turn"  # data.hh_single_turn: not exactly one human turn
DUPLICATE_PROMPT = "duplicate_prompt"
# SFT on preference data: a row of a prompt whose one SFT example another row gives (sft_set.py).
MERGED_PROMPT = "merged_prompt"

BAD_REASONS = frozenset(
    {
        MISSING_FIELD,
        EMPTY_FIELD,
        NOT_A_STRING,
        BAD_VALUE,
        INVALID_JSON,
        INVALID_UTF8,
        IDENTICAL_RESPONSES,
        PROMPT_MISMATCH,
        NO_ASSISTANT_TURN,
        CHAT_TEMPLATE_MISMATCH,
        RESPONSE_COUNT_MISMATCH,
        EOS_IN_TEXT,
        NO_ROOM_FOR_RESPONSE,
    }
)
FILTER_REASONS = frozenset({FILTERED_SCORE_RATIO, FILTERED_NOT_SINGLE_TURN, DUPLICATE_PROMPT, MERGED_PROMPT})
# Not reasons (the example is kept): counted apart, see BadInputReport.truncated.
TRUNCATED_PROMPT = "truncated_prompt"
TRUNCATED_RESPONSE = "truncated_response"


class BadRow(Exception):
    """Raised while turning one raw row into an example; caught and counted by the row walker."""

    def __init__(self, reason: str, field: str, detail: str = ""):
        if reason not in BAD_REASONS | FILTER_REASONS:
            raise ValueError(f"unknown bad-row reason {reason!r}")
        super().__init__(f"{reason} in field {field!r}" + (f": {detail}" if detail else ""))
        self.reason = reason
        self.field = field
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class RowLocation:
    """Where a raw row came from: a file path (or `hub:<name>:<split>`) and its 1-based number.

    For JSONL the number is the physical line, as an editor shows it (blank lines count); for a JSON
    array the element, for Parquet and hub datasets the row.
    """

    file: str
    row: int
    unit: str = "row"  # "line" | "record" | "row"

    def __str__(self) -> str:
        return f"{self.file} {self.unit} {self.row}"


@dataclasses.dataclass
class BadInputReport:
    """Counts per rejection reason for one split, plus the first rows rejected for each reason."""

    split: str
    origin: str = ""  # the file(s) the split was read from, for messages
    rows_read: int = 0
    examples_kept: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    samples_per_reason: int = 3
    # Kept examples that the length limits cut (not bad rows): how much of the data max_length and
    # max_prompt_length change, by part. An example can count in both.
    truncated: dict[str, int] = dataclasses.field(
        default_factory=lambda: {TRUNCATED_PROMPT: 0, TRUNCATED_RESPONSE: 0}
    )

    # The first kept examples the length limits cut (file, row, what was cut), for the log.
    truncated_samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def count_truncation(
        self, *, prompt: bool, response: bool, location: RowLocation | None = None, detail: str = ""
    ) -> None:
        self.truncated[TRUNCATED_PROMPT] += int(prompt)
        self.truncated[TRUNCATED_RESPONSE] += int(response)
        if (
            (prompt or response)
            and location is not None
            and len(self.truncated_samples) < self.samples_per_reason
        ):
            parts = [
                part for part, cut in ((TRUNCATED_PROMPT, prompt), (TRUNCATED_RESPONSE, response)) if cut
            ]
            self.truncated_samples.append(
                {
                    "parts": parts,
                    "file": location.file,
                    "row": location.row,
                    "unit": location.unit,
                    "detail": detail,
                }
            )

    def record(self, error: BadRow, location: RowLocation) -> None:
        seen = self.counts.get(error.reason, 0)
        self.counts[error.reason] = seen + 1
        if seen < self.samples_per_reason:
            self.samples.append(
                {
                    "reason": error.reason,
                    "file": location.file,
                    "row": location.row,
                    "unit": location.unit,
                    "field": error.field,
                    "detail": error.detail,
                }
            )

    @property
    def num_bad(self) -> int:
        return sum(n for reason, n in self.counts.items() if reason in BAD_REASONS)

    @property
    def num_filtered(self) -> int:
        return sum(n for reason, n in self.counts.items() if reason in FILTER_REASONS)

    def metrics(self, prefix: str = "data") -> dict[str, int]:
        """Flat scalars for the run's metrics, e.g. `data/train/bad/prompt_mismatch`."""
        base = f"{prefix}/{self.split}"
        out = {
            f"{base}/rows_read": self.rows_read,
            f"{base}/examples": self.examples_kept,
            f"{base}/bad_rows": self.num_bad,
            f"{base}/filtered_rows": self.num_filtered,
            **{f"{base}/{part}": count for part, count in sorted(self.truncated.items())},
        }
        for reason, count in sorted(self.counts.items()):
            kind = "filtered" if reason in FILTER_REASONS else "bad"
            out[f"{base}/{kind}/{reason}"] = count
        return out

    def summary(self) -> str:
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.counts.items())) or "none"
        return (
            f"{self.split}: {self.rows_read} rows read, {self.examples_kept} examples kept, "
            f"{self.num_bad} bad and {self.num_filtered} filtered rows ({reasons}); length limits cut "
            f"{self.truncated[TRUNCATED_PROMPT]} prompts and the responses of {self.truncated[TRUNCATED_RESPONSE]} examples"
        )

    def log(self, logger: logging.Logger, *, source: str) -> None:
        logger.info("data %s %s", source, self.summary())
        for sample in self.samples:
            logger.warning(
                "data %s %s: skipped %s %s %d (%s in field %r) %s",
                source,
                self.split,
                sample["file"],
                sample.get("unit", "row"),
                sample["row"],
                sample["reason"],
                sample["field"],
                sample["detail"],
            )

        for sample in self.truncated_samples:
            logger.info(
                "data %s %s: kept %s %s %d, cut by the length limits: %s",
                source,
                self.split,
                sample["file"],
                sample.get("unit", "row"),
                sample["row"],
                sample["detail"],
            )
        if max(self.truncated.values()) > len(self.truncated_samples):
            logger.info(
                "data %s %s: (the first %d examples cut shown)", source, self.split, self.samples_per_reason
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BadInputReport:
        return cls(**data)
