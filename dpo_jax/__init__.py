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


def parse_flags_or_exit(argv: list[str]) -> list[str]:
    """absl flags parser for `app.run`: a bad flag or config override is one line and exit status 2.

    ml_collections' config_flags reports a typo'd override (`--config.betta=0.5`) as an AttributeError
    and a bad config file path as an OSError, not as a flags error: both are the user's command line.
    """
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as error:
        exit_with_user_error(f"command line: {_one_line(error)}")


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
