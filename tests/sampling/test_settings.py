"""Sampling settings: one frozen value, validated where it is made, and the flag fragment every command
that samples declares: an out-of-range value on any of them is one `error:` line and exit status 2,
before any model is loaded."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap

import pytest

from dpo_jax import UserError
from dpo_jax.sampling.settings import (
    SamplingSettings,
    SamplingSettingsError,
    sampling_flags,
    settings_from_flags,
    temperatures_flag,
)
from tests.train_helpers import REPO

# (field, a value out of range) for every rule, and values of the wrong kind.
OUT_OF_RANGE = [
    ("temperature", -1.0),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("top_k", -1),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("max_new_tokens", 0),
]
WRONG_KIND = [("top_k", 1.5), ("max_new_tokens", 2.0), ("temperature", True), ("top_p", "0.9")]
# The same as flags: (flag text, the words the error must hold).
BAD_FLAGS = [
    ("--temperature=-1", "must be a finite number >= 0"),
    ("--temperature=nan", "must be a finite number >= 0"),
    ("--top_k=-1", "must be an integer >= 0"),
    ("--top_p=0", "must lie in (0, 1]"),
    ("--top_p=1.5", "must lie in (0, 1]"),
    ("--max_new_tokens=0", "must be an integer >= 1"),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE + WRONG_KIND)
def test_a_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(SamplingSettingsError, match=f"^{field}=") as error:
        SamplingSettings(**{field: value})
    assert isinstance(error.value, UserError) and error.value.field == field


def test_the_value_is_frozen_normalised_and_replaced_with_validation():
    settings = SamplingSettings(temperature=0, top_k=3, top_p=1, max_new_tokens=5)
    assert settings.as_dict() == dict(temperature=0.0, top_k=3, top_p=1.0, max_new_tokens=5)
    assert type(settings.temperature) is float and type(settings.top_p) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.temperature = 2.0
    assert settings.filters_tokens and not SamplingSettings().filters_tokens
    assert SamplingSettings(top_p=0.9).filters_tokens
    with pytest.raises(SamplingSettingsError, match="temperature=-0.5"):
        settings.replace(temperature=-0.5)
    temperature, top_k, top_p = settings.traced()
    assert (float(temperature), int(top_k), float(top_p)) == (0.0, 3, 1.0)


def test_the_flag_fragment_and_its_reader():
    rows = sampling_flags(max_new_tokens=48, fields=("temperature", "max_new_tokens"))
    assert [(name, default) for name, _, default, _ in rows] == [("temperature", 1.0), ("max_new_tokens", 48)]
    parse = dict((name, kind) for name, kind, _, _ in rows)
    assert parse["temperature"]("0.5") == 0.5
    with pytest.raises(ValueError, match=r"must be a finite number >= 0"):
        parse["temperature"]("-1")
    args = type("Args", (), dict(temperature=0.0, max_new_tokens=7))()
    assert settings_from_flags(args, top_p=0.5) == SamplingSettings(temperature=0.0, top_p=0.5, max_new_tokens=7)
    assert temperatures_flag("0, 0.5,1") == (0.0, 0.5, 1.0)
    for text in ("", "0,-1", "0,nan"):
        with pytest.raises(ValueError):
            temperatures_flag(text)


def _one_error_line(capsys, parse, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: command line: "), lines
    return lines[0]


def _commands():
    """(name, parse_args, the required flags, the sampling flags it takes) of each parse_command
    command that samples."""
    from dpo_jax import frontier, make_pairs, winrate
    from dpo_jax.perf import sample_benchmark

    return [
        ("make_pairs", make_pairs.parse_args, ["--workdir=w", "--out=o"], None),
        ("winrate", winrate.parse_args, ["--workdir=w", "--task=tldr"], ("top_k", "top_p", "max_new_tokens")),
        ("frontier", frontier.parse_args, ["--workdirs=w"], ("max_new_tokens",)),
        ("bench --program=sample", sample_benchmark.parse_args, ["--program=sample"], ("temperature", "top_k", "top_p")),
    ]


@pytest.mark.parametrize(("flag", "words"), BAD_FLAGS)
def test_every_command_that_samples_refuses_an_out_of_range_value(capsys, flag, words):
    checked = 0
    for name, parse, required, takes in _commands():
        if takes is not None and flag[2:].split("=")[0] not in takes:
            continue
        line = _one_error_line(capsys, parse, [*required, flag])
        assert f"flag {flag}: " in line and words in line, (name, line)
        checked += 1
    assert checked >= 2


def test_winrate_checks_each_temperature_and_bench_its_token_count(capsys):
    from dpo_jax import winrate
    from dpo_jax.perf import sample_benchmark

    line = _one_error_line(capsys, winrate.parse_args, ["--workdir=w", "--task=tldr", "--temperatures=0,-0.5"])
    assert "--temperatures=0,-0.5: must be a finite number >= 0" in line
    line = _one_error_line(capsys, sample_benchmark.parse_args, ["--program=sample", "--new_tokens=0"])
    assert "--new_tokens must be >= 1" in line
    args = sample_benchmark.parse_args(["--program", "sample", "--top_p=0.5", "--new_tokens=3"])
    assert args.sampling == SamplingSettings(top_p=0.5, max_new_tokens=3)


def test_the_sample_command_refuses_each_bad_value_with_one_line():
    """`python -m dpo_jax.sample --temperature=-1` (and each other bad value): one `error:` line, exit
    status 2, through the command's own flags parser (one process parses every case)."""
    script = textwrap.dedent(
        f"""
        import dpo_jax.sample
        for flag in {[flag for flag, _ in BAD_FLAGS]!r}:
            try:
                dpo_jax.sample.parse_args(["--workdir=w", "--prompts_file=p", flag])
            except SystemExit as error:
                print(error.code)
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.stdout.split() == ["2"] * len(BAD_FLAGS), result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(BAD_FLAGS)
    for line, (flag, words) in zip(errors, BAD_FLAGS):
        assert line.startswith(f"error: command line: flag {flag}: ") and words in line
