"""bench --program=sample: its RESULT line is complete and self-consistent (not its speed), and the
transformers side decodes the very weights ours does (greedy tokens agree)."""

import json
import statistics

import pytest

from dpo_jax import bench
from dpo_jax.config.command_line import parse_result_line
from dpo_jax.perf.sample_benchmark import model_config, parse_args

TINY = ["--program=sample", "--model=tiny", "--batch=2", "--prompt_length=4", "--new_tokens=3", "--repeats=2"]


def test_sample_result_with_transformers_side_by_side(capsys):
    returned = bench.main([*TINY, "--num_samples=2", "--compare=transformers"])
    lines = [parse_result_line(line) for line in capsys.readouterr().out.splitlines()]
    lines = [record for record in lines if record is not None]
    assert len(lines) == 1
    result = lines[0]
    assert result == json.loads(json.dumps(returned))
    assert result["program"] == "sample" and result["new_tokens_per_call"] == 2 * 2 * 3
    for side in (result, result["transformers"]):
        assert len(side["seconds_all"]) == 2
        assert side["seconds"] == pytest.approx(statistics.median(side["seconds_all"]), abs=1e-4)
        # Both figures are rounded (seconds to 1e-4, tokens/s to 0.1): compare within those roundings.
        rate = 12 / side["seconds"]
        assert side["new_tokens_per_second"] == pytest.approx(rate, abs=0.05 + rate * 0.5e-4 / side["seconds"])
    # Medians rounded to 0.1 ms, the ratio to 0.01: a relative error of a few 1e-3 at these sizes.
    assert result["speedup"] == pytest.approx(result["transformers"]["seconds"] / result["seconds"], rel=1e-2)
    assert result["greedy_rows_equal"] == 2  # same weights, same greedy tokens, every prompt


def test_layers_and_width_override_the_preset():
    config = model_config(parse_args(["--model=gpt2", "--layers=6", "--width=512"]))
    assert (config.num_layers, config.hidden_size, config.num_heads, config.intermediate_size) == (6, 512, 8, 2048)
    with pytest.raises(SystemExit):
        parse_args(["--width=100"])
