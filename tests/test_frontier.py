"""`python -m dpo_jax.frontier`'s Best-of-N flags: a comma list of N >= 2 with the reward model that
selects; a mistake is one `error:` line and exit status 2, before anything is loaded."""

import pytest

from dpo_jax import USER_ERROR_EXIT
from dpo_jax.frontier import parse_args


def test_best_of_flags_parse():
    args = parse_args(["--workdirs=run", "--best_of=4,16", "--best_of_reward=rm"])
    assert args.best_of == (4, 16) and args.best_of_reward == "rm"
    assert parse_args(["--workdirs=run"]).best_of == ()  # none by default
    assert parse_args(["--workdirs=run", "--best_of="]).best_of == ()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--best_of=1", "--best_of_reward=rm"], "each N must be >= 2"),
        (["--best_of=4,x", "--best_of_reward=rm"], "expected whole numbers N"),
        (["--best_of=4"], "--best_of needs --best_of_reward"),
    ],
)
def test_a_bad_best_of_flag_is_one_error_line_and_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--workdirs=run", *flags])
    assert exit_info.value.code == USER_ERROR_EXIT == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
