"""dpo_jax: Direct Preference Optimization in JAX/Flax.

The package root holds only what every room and command shares: the errors that mark a mistake in
what the user gave (a config value, a file, a flag), and how a command reports them: the message alone
on stderr and exit status `USER_ERROR_EXIT` (2, as argparse does for a bad command line). Any other
exception is a programming error and keeps its traceback.
"""

USER_ERROR_EXIT = 2


class UserError(ValueError):
    """A mistake in what the user gave: a config value, a data file, a flag, a workdir."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, directory or dataset the user named does not exist or holds nothing usable."""


class UnwritableError(UserError, PermissionError):
    """A directory the user named cannot be written."""


def _one_line(error: BaseException) -> str:
    # KeyError (and ml_collections' AttributeError wrapping one) repr their message; unwrap it.
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())


def print_error(message) -> None:
    """The one line every command writes for a failure it explains: `error: <message>` on stderr."""
    import sys

    sys.stderr.write(f"error: {_one_line(message) if isinstance(message, BaseException) else message}\n")
    sys.stderr.flush()


def exit_with_user_error(message: str) -> None:
    print_error(message)
    raise SystemExit(USER_ERROR_EXIT)


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort")


def parse_flags_or_exit(argv: list[str]) -> list[str]:
    """absl flags parser for `app.run`: a bad flag or config override is one line and exit status 2.

    ml_collections' config_flags reports a typo'd override (`--config.betta=0.5`) as an AttributeError,
    a config file that raises as a flags error holding the whole traceback (the useful sentence is its
    last line) and a bad config file path as an OSError when the config is first read: all are the
    user's command line, said in one line. `--help` prints the command's docstring (its usage, the
    config variants) and its own flags, and exits 0.
    """
    from absl import flags

    if any(arg in HELP_FLAGS for arg in argv[1:]):
        _print_help(flags.FLAGS)
    if "config" in flags.FLAGS:  # main and aot: a config file
        _check_config_paths(argv[1:])
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as error:
        exit_with_user_error(f"command line: {_without_traceback(error)}")


def _without_traceback(error: BaseException) -> str:
    text = str(error)
    marker = "Traceback (most recent call last)"
    if marker not in text:
        return _one_line(error)
    head = text[: text.index(marker)].rstrip(": \n")
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    exception, _, reason = last.partition(": ")
    reason = reason if reason and exception.replace(".", "").isidentifier() else last
    return " ".join(f"{head}: {reason}".split())


def _check_config_paths(args: list[str]) -> None:
    """A --config file that does not exist, said before absl and ml_collections are asked to load it."""
    import os

    for position, arg in enumerate(args):
        if arg == "--config" and position + 1 < len(args):
            value = args[position + 1]
        elif arg.startswith("--config="):
            value = arg[len("--config=") :]
        else:
            continue
        path = value.split(":", 1)[0]
        if path and not os.path.isfile(path):
            directory = os.path.dirname(path) or "."
            found = sorted(
                os.path.join(os.path.dirname(path), name)
                for name in (os.listdir(directory) if os.path.isdir(directory) else [])
                if name.endswith(".py") and not name.startswith("_") and name != "common.py"
            )
            hint = (
                f"configs there: {', '.join(found)}"
                if found
                else "config paths are relative to the current directory: run from the repository root, "
                "e.g. --config=configs/hh.py:tiny"
            )
            exit_with_user_error(f"command line: --config={value}: no such file {path} ({hint})")


def _print_help(flag_values) -> None:
    import sys

    main = sys.modules.get("__main__")
    sys.stdout.write((main.__doc__ or "").strip() + "\n\nFlags:\n")
    sys.stdout.write(flag_values.main_module_help() + "\n(--helpfull lists every flag.)\n")
    sys.stdout.flush()
    raise SystemExit(0)


def report_user_errors(main):
    """Wraps a command's main: a `UserError` becomes `error: <message>` on stderr and exit status 2."""
    import functools

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            exit_with_user_error(str(error))

    return wrapper
