"""The trainer on row batches (shared prompts + packing, reference log-probs precomputed through the
same rows) matches the padded run step for step: loss, metrics, eval and example counts, with fewer
tokens computed."""

import json
from pathlib import Path

import numpy as np
import pytest

from dpo_jax.training.loop import train_and_evaluate
from tests.train_helpers import read_metrics, tiny_config


def _run(workdir, **data):
    config = tiny_config(
        "hh",
        "tiny",
        num_train_steps=2,
        eval_every_examples=16,
        eval_samples=0,
        export_hf=False,
        grad_accum_steps=2,
        mesh_shape=(4, 1, 2),
    )
    config.reference.precompute_logps = True
    for key, value in data.items():
        config.data[key] = value
    train_and_evaluate(config, str(workdir))
    evals = [json.loads(line) for line in Path(workdir, "metrics.jsonl").read_text().splitlines()]
    return read_metrics(workdir), [e for e in evals if "eval/loss" in e]


def test_shared_packed_rows_train_like_padded_batches(tmp_path):
    padded, padded_eval = _run(tmp_path / "padded", share_prompt=False)
    rows, rows_eval = _run(tmp_path / "rows", share_prompt=True, pack=True)
    assert sorted(rows) == sorted(padded) == [1, 2]
    for step in padded:
        want, got = padded[step], rows[step]
        for key, value in want.items():
            if key.startswith(("perf/", "data/real_tokens")) or key in ("step", "time", "learning_rate"):
                continue
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (step, key)
        # Same examples, the prompt once and no padding: far fewer tokens computed.
        assert got["data/real_tokens_per_step"] < want["data/real_tokens_per_step"]
    assert len(rows_eval) == len(padded_eval) >= 1
    for want, got in zip(padded_eval, rows_eval, strict=True):
        for key, value in want.items():
            if key.startswith("eval/"):
                assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert np.isfinite(rows[2]["loss"])
