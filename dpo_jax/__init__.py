"""dpo_jax: Direct Preference Optimization in JAX/Flax.

The package root holds only what every room and command shares: the errors that mark a mistake in
what the user gave (a config value, a file, a flag), and the exit status a command reports them with,
`USER_ERROR_EXIT` (2, as argparse does for a bad command line), with the message alone on stderr
(`dpo_jax.config.command_line`, the commands' one command-line stack). Any other exception is a
programming error and keeps its traceback.
"""

USER_ERROR_EXIT = 2


class UserError(ValueError):
    """A mistake in what the user gave: a config value, a data file, a flag, a workdir."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, directory or dataset the user named does not exist or holds nothing usable."""


class UnwritableError(UserError, PermissionError):
    """A directory the user named cannot be written."""
