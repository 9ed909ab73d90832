"""Field accessors shared by the source adapters: each returns a clean value or raises `BadRow`.

Keeping the checks here gives every source the same reasons for the same faults (a `None` is always
`missing_field`, a number where text belongs is always `not_a_string`).
"""

from __future__ import annotations

from typing import Any

from dpo_jax.data.report import BAD_VALUE, EMPTY_FIELD, MISSING_FIELD, NOT_A_STRING, BadRow


def field_value(record: dict[str, Any], field: str, *, path: str | None = None) -> Any:
    """`record[field]`, or `missing_field` when absent or null; `path` names the field in messages."""
    value = record.get(field)
    if value is None:
        raise BadRow(MISSING_FIELD, path or field)
    return value


def text_field(
    record: dict[str, Any], field: str, *, path: str | None = None, allow_empty: bool = False
) -> str:
    value = field_value(record, field, path=path)
    return checked_text(value, path or field, allow_empty=allow_empty)


def checked_text(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise BadRow(NOT_A_STRING, name, f"got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise BadRow(EMPTY_FIELD, name)
    return value


def dict_field(record: dict[str, Any], field: str) -> dict[str, Any]:
    value = field_value(record, field)
    if not isinstance(value, dict):
        raise BadRow(BAD_VALUE, field, f"expected an object, got {type(value).__name__}")
    return value


def list_field(record: dict[str, Any], field: str) -> list[Any]:
    value = field_value(record, field)
    if not isinstance(value, list):
        raise BadRow(BAD_VALUE, field, f"expected a list, got {type(value).__name__}")
    return value


def number_field(record: dict[str, Any], field: str) -> float:
    return checked_number(field_value(record, field), field)


def checked_number(value: Any, name: str) -> float:
    # bool is an int subclass; a True score is a data error, not the number 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRow(BAD_VALUE, name, f"expected a number, got {value!r}")
    return float(value)


def choice_field(record: dict[str, Any], field: str, choices: range) -> int:
    value = field_value(record, field)
    if isinstance(value, bool) or not isinstance(value, int) or value not in choices:
        raise BadRow(
            BAD_VALUE, field, f"expected an integer in [{choices.start}, {choices.stop - 1}], got {value!r}"
        )
    return value
