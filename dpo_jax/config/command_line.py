"""The commands' one command-line stack: their flags as tables, parsed by `parse_command` into a fresh
namespace; one way to report a mistake (`error: ...` on stderr, exit status 2); one `--help`; and the
one `RESULT {json}` line a command prints per result (`print_result`, `result_line`).

Every command (main, sample, aot, experiment, synthetic.steps, winrate, make_pairs, frontier,
judge_agreement, bench, recipes.tiny_classifier, recipes.rehearsal_data) declares its flags as a table
and reads them with `parse_command`; nothing else in the package defines a flag, parses argv or spells
the RESULT prefix (tests/test_layout.py). A table row is `(name, kind, default, help)`: kind is str,
int, float, bool, list (comma-separated), `CONFIG_FILE` (an ml_collections config file,
`--config=configs/hh.py:tiny`, with `--config.<field>=<value>` overrides, locked so a typo fails), or
a function from the flag's text to its value whose ValueError is the user's mistake. `choices` makes a
flag an enum; `required` names the flags that must be given; `overrides_of="recipe"` collects the
`--recipe.<field>=<value>` arguments as `field=value` strings (`args.overrides`).

A mistake in the command line is one `error: command line: ...` line on stderr and exit status 2
(`command_error`); a `UserError` a command raises later is `error: <message>` and exit status 2
(`report_user_errors`). Exit statuses 75 (preempted after saving) and 1 (the run failed) are the
training commands' own. `--help` (`-h`) prints the usage, the command's docstring and its flags, and
exits 0. Each call parses into its own `FlagValues`, so a command can be parsed many times in one
process (tests) and two commands' flags of the same name never collide in absl's global registry.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

from absl import flags

from dpo_jax import USER_ERROR_EXIT, UserError

FlagRow = tuple[str, Callable | type | str, object, str]
CONFIG_FILE = "config file"  # the kind of a flag naming an ml_collections config file
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort")


# --- How a command reports a mistake ------------------------------------------------------------------
def _one_line(error: BaseException) -> str:
    # KeyError (and ml_collections' AttributeError wrapping one) repr their message; unwrap it.
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())


def print_error(message) -> None:
    """The one line every command writes for a failure it explains: `error: <message>` on stderr."""
    sys.stderr.write(f"error: {_one_line(message) if isinstance(message, BaseException) else message}\n")
    sys.stderr.flush()


def exit_with_user_error(message: str) -> None:
    print_error(message)
    raise SystemExit(USER_ERROR_EXIT)


def command_error(message: str) -> None:
    """A mistake in the command line: one line, exit status 2."""
    exit_with_user_error(f"command line: {message}")


def run_command(main: Callable[[], Any]) -> NoReturn:
    """A command's `if __name__ == "__main__":` body: runs `main()` and exits with the status it returns
    (an int; anything else, e.g. a result kept for in-process callers, is success).

    Python's cyclic garbage collector walks every tracked object at each full collection, and once more
    at exit; a command holds millions, nearly all made by importing jax, flax, orbax and transformers
    and alive until the process ends. They are frozen (`gc.freeze`: left out of collections) once the
    command's module is imported and again before exit: 0.6-0.7 s less per process on a 2-core CPU
    (a `dpo_jax.main` stage of the imdb rehearsal, 5.6 s -> 4.9 s), and a recipe starts dozens of
    processes. Objects made while the command runs are collected as usual; at exit, atexit handlers still
    run and the streams are flushed, as always.
    """
    gc.freeze()
    try:
        status = main()
    finally:
        gc.freeze()
    sys.exit(status if isinstance(status, int) else 0)


def report_user_errors(main):
    """Wraps a command's main: a `UserError` becomes `error: <message>` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            exit_with_user_error(str(error))

    return wrapper


def _without_traceback(error: BaseException) -> str:
    """ml_collections reports a config file that raises as a flags error holding the whole traceback:
    the useful sentence is its last line."""
    text = str(error)
    marker = "Traceback (most recent call last)"
    if marker not in text:
        return _one_line(error)
    head = text[: text.index(marker)].rstrip(": \n")
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    exception, _, reason = last.partition(": ")
    reason = reason if reason and exception.replace(".", "").isidentifier() else last
    return " ".join(f"{head}: {reason}".split())


def _check_config_path(args: Sequence[str], name: str) -> None:
    """A config file that does not exist, said before absl and ml_collections are asked to load it."""
    for position, arg in enumerate(args):
        if arg == f"--{name}" and position + 1 < len(args):
            value = args[position + 1]
        elif arg.startswith(f"--{name}="):
            value = arg[len(f"--{name}=") :]
        else:
            continue
        path = value.split(":", 1)[0]
        if path and not os.path.isfile(path):
            directory = os.path.dirname(path) or "."
            found = sorted(
                os.path.join(os.path.dirname(path), entry)
                for entry in (os.listdir(directory) if os.path.isdir(directory) else [])
                if entry.endswith(".py") and not entry.startswith("_") and entry != "common.py"
            )
            hint = (
                f"configs there: {', '.join(found)}"
                if found
                else "config paths are relative to the current directory: run from the repository root, "
                "e.g. --config=configs/hh.py:tiny"
            )
            command_error(f"--{name}={value}: no such file {path} ({hint})")


# --- Flags as a table ---------------------------------------------------------------------------------
class _Converter(flags.ArgumentParser):
    """A flag whose text a function turns into its value (a ValueError says what is wrong)."""

    def __init__(self, convert: Callable):
        self.convert = convert

    def parse(self, argument):
        return self.convert(argument) if isinstance(argument, str) else argument

    def flag_type(self) -> str:
        return self.convert.__name__.lstrip("_")


def _define(
    values: flags.FlagValues, row: FlagRow, choices: Mapping[str, Sequence[str]], argv: list[str]
) -> None:
    name, kind, default, text = row
    if isinstance(kind, str) and kind == CONFIG_FILE:
        from ml_collections import config_flags

        # sys_argv: where the config flag finds its `--name.<field>=` overrides (not sys.argv).
        config_flags.DEFINE_config_file(name, default, text, flag_values=values, sys_argv=argv)
    elif name in choices:
        flags.DEFINE_enum(name, default, list(choices[name]), text, flag_values=values)
    elif kind is bool:
        flags.DEFINE_bool(name, default, text, flag_values=values)
    elif kind is list:
        flags.DEFINE_list(name, default, text, flag_values=values)
    elif kind in (str, int, float):
        define = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float}[kind]
        define(name, default, text, flag_values=values)
    else:
        flags.DEFINE(_Converter(kind), name, default, text, values, flags.ArgumentSerializer())


def _print_help(prog: str, doc: str, table: Sequence[FlagRow], values: flags.FlagValues) -> None:
    lines = [f"usage: {prog} [flags]", "", doc.strip(), "", "flags:"]
    for name, *_ in table:
        flag = values[name]
        default = "" if flag.default is None else f" (default: {flag.default_as_str or repr(flag.default)})"
        lines.append(f"  --{name}: {flag.help}{default}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    raise SystemExit(0)


def parse_command(
    prog: str,
    argv: Sequence[str] | None,
    table: Iterable[FlagRow],
    *,
    doc: str = "",
    choices: Mapping[str, Sequence[str]] | None = None,
    required: Sequence[str] = (),
    overrides_of: str | None = None,
) -> types.SimpleNamespace:
    """`argv` (without the program name; None: sys.argv) parsed by `table` -> the flags' values (a config
    file's flag: its ConfigDict, overrides applied; with `overrides_of`, `overrides` too)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = []
    if overrides_of:
        prefix = f"--{overrides_of}."
        overrides = [arg[len(prefix) :] for arg in argv if arg.startswith(prefix)]
        argv = [arg for arg in argv if not arg.startswith(prefix)]
    table = tuple(table)
    values = flags.FlagValues()
    for row in table:
        _define(values, row, choices or {}, [prog, *argv])
    for name in required:
        flags.mark_flag_as_required(name, flag_values=values)
    if any(arg in HELP_FLAGS for arg in argv):
        _print_help(prog, doc, table, values)
    configs = [name for name, kind, *_ in table if isinstance(kind, str) and kind == CONFIG_FILE]
    for name in configs:
        _check_config_path(argv, name)
    try:
        rest, parsed = _parse(values, [prog, *argv], [name for name, *_ in table], configs)
    except UserError as error:
        command_error(str(error))
    if len(rest) > 1:
        command_error(f"unexpected arguments {rest[1:]}")
    if overrides_of:
        parsed["overrides"] = overrides
    return types.SimpleNamespace(**parsed)


def read_config(args: Sequence[str], name: str = "config"):
    """The ConfigDict of a config-file flag and its overrides (`--config=FILE:VARIANT`,
    `--config.<field>=<value>` ...; other arguments ignored), read as a command reads them; a mistake is
    a UserError (the caller says whose: e.g. a recipe's stage)."""
    args = [arg for arg in args if arg.startswith(f"--{name}=") or arg.startswith(f"--{name}.")]
    values = flags.FlagValues()
    _define(values, (name, CONFIG_FILE, None, "a config file"), {}, [name, *args])
    return _parse(values, [name, *args], [name], [name])[1][name]


_PARSE_ERRORS = (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError)


def _parse(
    values: flags.FlagValues, argv: list[str], names: Sequence[str], configs: Sequence[str]
) -> tuple[list[str], dict[str, Any]]:
    """`argv` (program name first) parsed into `values` -> (the arguments left, {flag: value}); each config
    file's flag is read here, so a file that fails to load fails here, and `<flag>_ref` holds its
    `FILE[:VARIANT]` as given. A mistake is a UserError."""
    from ml_collections import config_flags

    try:  # ml_collections: a typo'd override is an AttributeError, a bad value a ValueError or TypeError
        rest = values(argv)
        parsed = {name: values[name].value for name in names}
    except _PARSE_ERRORS as error:
        raise UserError(_without_traceback(error)) from None
    for name in (name for name in configs if parsed[name] is not None):
        try:  # config_flags defers a config file that failed to load until it is first read
            parsed[name].get  # noqa: B018
        except _PARSE_ERRORS as error:
            raise UserError(f"--{name}: {' '.join(_without_traceback(error).split())}") from None
        parsed[f"{name}_ref"] = config_flags.get_config_filename(values[name])
    return rest, parsed


def peek_flag(argv: Sequence[str] | None, name: str, default: str) -> str:
    """The text of the first `--name=VALUE` (or `--name VALUE`) in `argv` (None: sys.argv), read before
    the full parse by a command whose table depends on it (`bench --program=train|sample`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for index, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
    return default


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
