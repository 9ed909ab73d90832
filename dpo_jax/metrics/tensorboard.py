"""TensorBoard event files of scalars, written with the standard library alone.

tensorboardX imports PyTorch whenever PyTorch is installed (1.7 s of every stage's start-up on a CPU box,
and a recipe runs dozens of stages); the trainer logs only scalars, and their file format is small: a
file of records, each `length (uint64) | masked CRC-32C of the length | data | masked CRC-32C of the
data`, whose data is one `tensorflow.Event` protocol buffer (wall time, step, and a `Summary` of
`(tag, simple_value)` pairs; the first event names the format version). The few protobuf fields are
encoded here by hand; tests/metrics/test_tensorboard.py reads the files back with tensorboardX's own
generated protobuf classes.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Mapping

FILE_VERSION = "brain.Event:2"
_CASTAGNOLI = 0x82F63B78  # CRC-32C's polynomial, bit-reversed


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CASTAGNOLI if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord around `data`."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# --- The protobuf fields an Event of scalars uses (wire types: 0 varint, 1 64-bit, 2 bytes, 5 32-bit) ---
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, *, scalars: Mapping[str, float] = (), file_version: str = "") -> bytes:
    """A serialised `tensorflow.Event`: wall_time = 1 (double), step = 2 (int64), file_version = 3,
    summary = 5, whose `Summary.value` = 1 each holds tag = 1 and simple_value = 2 (float)."""
    if step < 0:
        raise ValueError(f"step {step} < 0")
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step)
    if file_version:
        out += _length_delimited(3, file_version.encode())
    values = b"".join(
        _length_delimited(1, _length_delimited(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value))
        for tag, value in dict(scalars).items()
    )
    if values:
        out += _length_delimited(5, values)
    return out


class ScalarEventWriter:
    """`logdir/events.out.tfevents.<time>.<host>.<pid>`: one event per `add_scalars` call, flushed, so a
    TensorBoard reading the directory sees every logged step while the run goes on."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")
        self._write(event(time.time(), 0, file_version=FILE_VERSION))

    def _write(self, data: bytes) -> None:
        self._file.write(record(data))
        self._file.flush()

    def add_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self._write(event(time.time(), int(step), scalars={k: float(v) for k, v in scalars.items()}))

    def close(self) -> None:
        self._file.close()
