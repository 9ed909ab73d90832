"""The commands' one command-line stack (`dpo_jax.config.command_line`): a table of flags of every kind
(a list, a config file with `--config.<field>=` overrides, `--recipe.<field>=` overrides) parsed into a
fresh namespace; each mistake one `error: command line: ...` line and exit status 2; `--help` exit 0."""

import subprocess
import sys

import pytest

from dpo_jax.config.command_line import CONFIG_FILE, parse_command, peek_flag, result_line

CONFIG = "configs/hh.py:tiny"
TABLE = (
    ("config", CONFIG_FILE, None, "a config file"),
    ("targets", list, ["v4-8"], "comma-separated"),
    ("steps", int, 3, "how many"),
    ("mode", str, "a", "a | b"),
)


def parse(*argv, **kwargs):
    return parse_command("prog", list(argv), TABLE, doc="The doc.", choices={"mode": "ab"}, **kwargs)


def _error(capsys, *argv, **kwargs) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv, **kwargs)
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    return line


def test_every_kind_parses_into_a_fresh_namespace():
    args = parse(f"--config={CONFIG}", "--config.beta=0.5", "--targets=h100,v5e-8", "--mode=b")
    assert (
        args.config.beta == 0.5 and args.targets == ["h100", "v5e-8"] and args.mode == "b" and args.steps == 3
    )
    again = parse(f"--config={CONFIG}")  # parsed again in one process: nothing left from the first parse
    assert again.config.beta != 0.5 and again.targets == ["v4-8"]
    recipe = parse(
        "--recipe.betas=0.1,0.5", "--steps=1", "--recipe.args.dpo=--config.beta=1", overrides_of="recipe"
    )
    assert recipe.overrides == ["betas=0.1,0.5", "args.dpo=--config.beta=1"] and recipe.steps == 1


@pytest.mark.parametrize(
    "argv,message",
    [
        ([f"--config={CONFIG}", "--config.betta=1"], "error: command line: 'betta' Did you mean \"beta\""),
        (
            [f"--config={CONFIG}", "--config.beta=x"],
            "error: command line: flag --config.beta=x: could not convert",
        ),
        (["--config=configs/nope.py"], "error: command line: --config=configs/nope.py: no such file"),
        (["--steps=x"], "error: command line: flag --steps=x: invalid literal for int()"),
        (["--mode=c"], "error: command line: flag --mode=c: value should be one of <a|b>"),
        (["--nope=1"], "error: command line: Unknown command line flag 'nope'"),
        ([f"--config={CONFIG}", "stray"], "error: command line: unexpected arguments ['stray']"),
        ([], "error: command line: flag --config=None: Flag --config must have a value other than None."),
    ],
)
def test_each_mistake_is_one_line_and_exit_2(capsys, argv, message):
    assert _error(capsys, *argv, required=("config",)).startswith(message)


def test_help_prints_the_usage_the_doc_and_every_flag_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse("--help", "--steps=x")  # help wins over a mistake
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: prog [flags]\n\nThe doc.") and all(f"--{row[0]}:" in out for row in TABLE)


def test_a_flag_read_before_the_parse_and_the_result_line():
    assert peek_flag(["--x=1", "--program", "sample"], "program", "train") == "sample"
    assert peek_flag(["--program=train", "--program=sample"], "program", "x") == "train"
    assert peek_flag([], "program", "train") == "train"
    assert result_line({"b": float("nan"), "a": 1}) == 'RESULT {"a": 1, "b": null}'


def test_the_training_command_takes_its_config_and_the_distributed_flags():
    from dpo_jax import main
    from dpo_jax.config.runtime import DISTRIBUTED_FLAGS

    assert set(DISTRIBUTED_FLAGS) <= set(main.FLAGS)
    args = main.parse_args([f"--config={CONFIG}", "--workdir=w", "--config.beta=0.25", "--distributed=on",
                            "--distributed_timeout_s=5"])  # fmt: skip
    assert (args.config.beta, args.workdir) == (0.25, "w")
    assert (args.distributed, args.distributed_timeout_s) == ("on", 5)


RUN_COMMAND_SCRIPT = """
import gc, sys
from dpo_jax.config.command_line import run_command

def main():
    print("frozen", gc.get_freeze_count() > 0, flush=True)
    if sys.argv[1] == "raise":
        raise SystemExit(2)
    return {"result": 1} if sys.argv[1] == "result" else int(sys.argv[1])

run_command(main)
"""


@pytest.mark.parametrize("argument,status", [("0", 0), ("3", 3), ("raise", 2), ("result", 0)])
def test_a_command_runs_with_the_imported_objects_frozen_and_exits_with_its_status(argument, status):
    """`run_command` (every command's `__main__`): the objects alive once the command's module is
    imported are kept out of garbage collections; main's int status (or SystemExit) is the exit status,
    a result returned for in-process callers exits 0."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_COMMAND_SCRIPT, argument], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == status and done.stdout == "frozen True\n", done.stderr[-2000:]
