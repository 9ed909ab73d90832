"""TensorBoard event files from metrics/tensorboard.py: CRC-32C's check value, every record's framing and
checksums, the events as tensorboardX's own protobuf classes parse them (the same scalars tensorboardX's
writer records), and a training process that writes them without importing PyTorch."""

import math
import struct
import subprocess
import sys

import numpy as np
import pytest

from dpo_jax.metrics.tensorboard import FILE_VERSION, crc32c, event, masked_crc32c
from dpo_jax.metrics.writer import MetricsWriter
from tests.train_helpers import REPO, process_env


def read_records(path) -> list[bytes]:
    data, records, at = path.read_bytes(), [], 0
    while at < len(data):
        header = data[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[at + 8 : at + 12])
        payload = data[at + 12 : at + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[at + 12 + length : at + 16 + length])
        assert length_crc == masked_crc32c(header) and payload_crc == masked_crc32c(payload)
        records.append(payload)
        at += 16 + length
    return records


def read_events(logdir) -> list:
    from tensorboardX.proto.event_pb2 import Event

    (path,) = [p for p in logdir.iterdir() if "tfevents" in p.name]
    events = []
    for payload in read_records(path):
        parsed = Event()
        parsed.ParseFromString(payload)
        events.append(parsed)
    return events


def scalars(events) -> list[tuple[int, str, float]]:
    return sorted((e.step, v.tag, v.simple_value) for e in events for v in e.summary.value)


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C (Castagnoli) check value
    assert crc32c(b"") == 0


def test_the_writers_events_parse_as_tensorboards_own(tmp_path):
    writer = MetricsWriter(str(tmp_path), tensorboard=True)
    writer.write(1, {"loss": 0.6931, "rewards/margins": -0.25}, echo=False)
    writer.write(2**40, {"loss": math.nan, "grad_norm": math.inf}, echo=False)
    writer.close()
    events = read_events(tmp_path / "tensorboard")
    assert events[0].file_version == FILE_VERSION and events[0].wall_time > 0
    got = scalars(events)
    assert [(step, tag) for step, tag, _ in got] == [
        (1, "loss"), (1, "rewards/margins"), (2**40, "grad_norm"), (2**40, "loss")
    ]
    assert got[0][2] == np.float32(0.6931) and got[1][2] == -0.25
    assert got[2][2] == math.inf and math.isnan(got[3][2])
    with pytest.raises(ValueError, match="step -1"):
        event(0.0, -1)


def test_the_same_scalars_as_tensorboardx_records(tmp_path):
    from tensorboardX import SummaryWriter

    metrics = {1: {"loss": 0.5, "lr": 1e-5}, 7: {"loss": 0.25, "rewards/accuracies": 1.0}}
    (tmp_path / "ours").mkdir()
    ours = MetricsWriter(str(tmp_path / "ours"), tensorboard=True)
    theirs = SummaryWriter(str(tmp_path / "theirs" / "tensorboard"))
    for step, values in metrics.items():
        ours.write(step, values, echo=False)
        for tag, value in values.items():
            theirs.add_scalar(tag, value, step)
    ours.close()
    theirs.close()
    assert scalars(read_events(tmp_path / "ours" / "tensorboard")) == scalars(
        read_events(tmp_path / "theirs" / "tensorboard")
    )


def test_writing_tensorboard_logs_imports_no_torch(tmp_path):
    script = (
        "import sys\n"
        "from dpo_jax.metrics.writer import MetricsWriter\n"
        f"writer = MetricsWriter({str(tmp_path)!r}, tensorboard=True)\n"
        "writer.write(1, {'loss': 1.0}, echo=False)\n"
        "writer.close()\n"
        "assert 'torch' not in sys.modules and 'tensorboardX' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=process_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert scalars(read_events(tmp_path / "tensorboard")) == [(1, "loss", 1.0)]
