"""Scalar series from TensorBoard event files (events.out.tfevents.*), read with the standard library only.

sd-scripts logs through accelerate's TensorBoard tracker (torch's SummaryWriter). An event file is a TFRecord
stream: per record a little-endian uint64 length, its masked CRC-32C, the payload (an `Event` protobuf) and
the payload's masked CRC-32C. Reading it here keeps `medsynth review` free of tensorboard/tensorflow and lets it
read a file that training is still appending to: a record that is not completely written yet ends the read.

Protobuf fields used (tensorboard/compat/proto): Event{1 wall_time double, 2 step int64, 5 summary},
Summary{1 repeated Value}, Value{1 tag, 2 simple_value float, 8 tensor}, TensorProto{1 dtype, 4 tensor_content,
5 float_val, 6 double_val}; add_scalar writes simple_value, new_style=True a one-element float tensor.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import MedsynthError

_DT_FLOAT, _DT_DOUBLE = 1, 2


@dataclass(frozen=True)
class Point:
    step: int
    value: float
    wall_time: float


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(data: bytes) -> Iterator[bytes]:
    """The complete, intact records of a TFRecord stream; stops at the first torn or corrupt one."""
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        end = pos + 12 + length + 4
        if header_crc != masked_crc32c(header) or end > len(data):
            return
        payload = data[pos + 12:pos + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[end - 4:end])
        if payload_crc != masked_crc32c(payload):
            return
        yield payload
        pos = end


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one protobuf message; varints as int, everything else as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
            continue
        if wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos + size > len(buf):
            raise ValueError("truncated field")
        yield number, wire, buf[pos:pos + size]
        pos += size


def _tensor_scalar(buf: bytes) -> float | None:
    dtype, content, values = 0, b"", []
    for number, wire, value in fields(buf):
        if number == 1 and wire == 0:
            dtype = int(value)  # type: ignore[arg-type]
        elif number == 4 and wire == 2:
            content = bytes(value)  # type: ignore[arg-type]
        elif number == 5:  # float_val, packed (wire 2) or not (wire 5)
            values += struct.unpack(f"<{len(value) // 4}f", value)  # type: ignore[arg-type]
        elif number == 6:  # double_val
            values += struct.unpack(f"<{len(value) // 8}d", value)  # type: ignore[arg-type]
    if values:
        return float(values[0])
    if dtype == _DT_FLOAT and len(content) == 4:
        return struct.unpack("<f", content)[0]
    if dtype == _DT_DOUBLE and len(content) == 8:
        return struct.unpack("<d", content)[0]
    return None


def _summary_values(buf: bytes) -> Iterator[tuple[str, float]]:
    for number, wire, value in fields(buf):
        if number != 1 or wire != 2:
            continue
        tag, scalar = None, None
        for vnum, vwire, vval in fields(value):  # type: ignore[arg-type]
            if vnum == 1 and vwire == 2:
                tag = bytes(vval).decode("utf-8", "replace")  # type: ignore[arg-type]
            elif vnum == 2 and vwire == 5:
                scalar = struct.unpack("<f", vval)[0]  # type: ignore[arg-type]
            elif vnum == 8 and vwire == 2:
                scalar = _tensor_scalar(vval)  # type: ignore[arg-type]
        if tag is not None and scalar is not None:
            yield tag, scalar


def _event_scalars(payload: bytes) -> Iterator[tuple[str, Point]]:
    wall_time, step, summary = 0.0, 0, None
    for number, wire, value in fields(payload):
        if number == 1 and wire == 1:
            wall_time = struct.unpack("<d", value)[0]  # type: ignore[arg-type]
        elif number == 2 and wire == 0:
            step = int(value)  # type: ignore[arg-type]
            step = step - (1 << 64) if step >= 1 << 63 else step
        elif number == 5 and wire == 2:
            summary = value
    if summary is not None:
        for tag, scalar in _summary_values(summary):  # type: ignore[arg-type]
            yield tag, Point(step, scalar, wall_time)


def read_file_scalars(path: Path) -> dict[str, list[Point]]:
    """Every scalar in one event file, per tag, in file order."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MedsynthError(f"{path}: cannot read the TensorBoard event file ({exc.strerror})") from exc
    out: dict[str, list[Point]] = {}
    for payload in records(data):
        try:
            for tag, point in _event_scalars(payload):
                out.setdefault(tag, []).append(point)
        except (ValueError, struct.error) as exc:
            raise MedsynthError(f"{path}: not a TensorBoard event file (bad record: {exc})") from exc
    return out


def read_scalars(paths: Iterable[Path]) -> dict[str, list[Point]]:
    """Scalars of several event files merged per tag and sorted by step. A step logged twice (a resumed run
    writes a new file and may repeat steps) keeps the value written last."""
    merged: dict[str, dict[int, Point]] = {}
    for path in paths:
        for tag, points in read_file_scalars(path).items():
            by_step = merged.setdefault(tag, {})
            for point in points:
                old = by_step.get(point.step)
                if old is None or point.wall_time >= old.wall_time:
                    by_step[point.step] = point
    return {tag: [by_step[s] for s in sorted(by_step)] for tag, by_step in sorted(merged.items())}
