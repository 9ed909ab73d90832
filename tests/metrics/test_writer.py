"""metrics.jsonl: strict JSON (NaN as null), one row per step after a resume, recreated if deleted."""

import json
import logging
import math

from dpo_jax.metrics.writer import MetricsWriter


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_non_finite_values_are_json_null(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    writer.write(1, {"loss": math.nan, "grad_norm": math.inf, "rewards/margins": 0.5})
    writer.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text and '"nan"' not in text
    assert _rows(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": None, "grad_norm": None, "rewards/margins": 0.5}
    ]


def test_resume_drops_rows_after_the_restored_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    for step in range(1, 6):
        writer.write(step, {"loss": float(step)})
    writer.close()
    with open(path, "a") as handle:
        handle.write('{"step": 6, "lo')  # killed mid-write
    resumed = MetricsWriter(str(tmp_path), tensorboard=False, resume_step=3)
    for step in (4, 5):
        resumed.write(step, {"loss": 10.0 * step})
    resumed.close()
    assert [(row["step"], row["loss"]) for row in _rows(path)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]


def test_a_deleted_log_is_recreated_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    writer.write(1, {"loss": 1.0})
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="dpo_jax"):
        writer.write(2, {"loss": 2.0})
    writer.write(3, {"loss": 3.0})
    writer.close()
    assert "vanished" in caplog.text and "step 2" in caplog.text
    assert [row["step"] for row in _rows(path)] == [2, 3]


def test_nothing_measured_writes_no_row_and_no_line(tmp_path, caplog):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    with caplog.at_level(logging.INFO, logger="dpo_jax"):
        writer.write(0, {})  # e.g. an evaluation of a run without an eval split
        writer.write(1, {"loss": 1.0})
    writer.close()
    assert _rows(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 1.0}]
    assert "step 0:" not in caplog.text and "step 1: loss=" in caplog.text
