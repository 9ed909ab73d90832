"""The commands' one command-line stack: absl flags declared as a table, parsed into a fresh namespace,
and the one `RESULT {json}` line a command prints per result (`print_result`).

Every command (main, sample and aot through `app.run`; winrate, make_pairs, frontier, judge_agreement,
bench and recipes.tiny_classifier through `parse_command`) reads its flags with absl, and a mistake in
them is one `error: command line: ...` line and exit status 2 (`dpo_jax.exit_with_user_error`). A table row is `(name, kind, default, help)`:
kind is str, int, float, bool, or a function from the flag's text to its value whose ValueError is
the user's mistake; a default of None with `required` names the flags that must be given.

Each call parses into its own `FlagValues`, so a command can be parsed many times in one process
(tests) and two commands' flags of the same name never collide in absl's global registry.
"""

from __future__ import annotations

import json
import math
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence

from absl import flags

from dpo_jax import exit_with_user_error

FlagRow = tuple[str, Callable | type, object, str]


class _Converter(flags.ArgumentParser):
    """A flag whose text a function turns into its value (a ValueError says what is wrong)."""

    def __init__(self, convert: Callable):
        self.convert = convert

    def parse(self, argument):
        return self.convert(argument) if isinstance(argument, str) else argument

    def flag_type(self) -> str:
        return self.convert.__name__.lstrip("_")


def _define(values: flags.FlagValues, row: FlagRow, choices: Mapping[str, Sequence[str]]) -> None:
    name, kind, default, text = row
    if name in choices:
        flags.DEFINE_enum(name, default, list(choices[name]), text, flag_values=values)
    elif kind is bool:
        flags.DEFINE_bool(name, default, text, flag_values=values)
    elif kind in (str, int, float):
        define = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float}[kind]
        define(name, default, text, flag_values=values)
    else:
        flags.DEFINE(_Converter(kind), name, default, text, values, flags.ArgumentSerializer())


def define_flags(
    values: flags.FlagValues, table: Iterable[FlagRow], choices: Mapping[str, Sequence[str]] | None = None
) -> None:
    """The table's flags in `values` (for the `app.run` commands: absl's global `flags.FLAGS`)."""
    for row in table:
        _define(values, row, choices or {})


def command_error(message: str) -> None:
    """A mistake in the command line found after parsing: one line, exit status 2."""
    exit_with_user_error(f"command line: {message}")


def parse_command(
    prog: str,
    argv: Sequence[str] | None,
    table: Iterable[FlagRow],
    *,
    doc: str = "",
    choices: Mapping[str, Sequence[str]] | None = None,
    required: Sequence[str] = (),
) -> types.SimpleNamespace:
    """`argv` (without the program name; None: sys.argv) parsed by `table` -> the flags' values."""
    values = flags.FlagValues()
    define_flags(values, table, choices)
    flags.DEFINE_bool("help", False, "show this help and exit", flag_values=values)
    for name in required:
        flags.mark_flag_as_required(name, flag_values=values)
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--help" in argv or "-h" in argv:
        print(f"usage: {prog} [flags]\n\n{doc}\n{values.main_module_help() or values.get_help()}")
        raise SystemExit(0)
    try:
        rest = values([prog, *argv])
    except flags.Error as error:
        command_error(" ".join(str(error).split()))
    if len(rest) > 1:
        command_error(f"unexpected arguments {rest[1:]}")
    return types.SimpleNamespace(**{name: values[name].value for name in values if name != "help"})


# --- What a command prints ---------------------------------------------------------------------------
RESULT_PREFIX = "RESULT "


def jsonable(value):
    """`value` with every non-finite float as None: NaN is not JSON (a rate over zero verdicts is null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def result_line(record: dict) -> str:
    """The `RESULT {json}` line of one result (keys sorted), as every command prints it."""
    return RESULT_PREFIX + json.dumps(jsonable(record), sort_keys=True)


def parse_result_line(line: str) -> dict | None:
    """The record of a `RESULT {json}` line; None for any other line."""
    return json.loads(line[len(RESULT_PREFIX) :]) if line.startswith(RESULT_PREFIX) else None


def print_result(record: dict) -> None:
    """Print `record`'s RESULT line on stdout, from process 0 only (the others of a multi-host run compute
    the same results in lockstep)."""
    from dpo_jax.config.runtime import writes_outputs

    if writes_outputs():
        print(result_line(record), flush=True)
