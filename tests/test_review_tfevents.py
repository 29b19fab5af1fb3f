"""Reading TensorBoard scalars without tensorboard: files written by tensorboard's own writer, a real sd-scripts
run's event file, a file still being appended to, and a resumed run's second file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.runs.tfevents import masked_crc32c, read_file_scalars, read_scalars
from review_helpers import write_events

REAL_RUN = Path(__file__).parent / "data" / "cpu_train_run"


def f32(value: float) -> float:
    return float(np.float32(value))  # simple_value is a float32 on disk


def test_values_written_by_the_tensorboard_writer_read_back_equal(tmp_path):
    written = {"loss/current": [(s, 1.0 / s) for s in range(1, 30)],
               "loss/epoch_average": [(1, 0.9), (2, 0.7)], "lr/unet": [(s, 2e-7 * s) for s in range(1, 30)]}
    path = write_events(tmp_path / "logs", written)
    read = read_file_scalars(path)
    assert sorted(read) == sorted(written)
    for tag, points in written.items():
        assert [(p.step, p.value) for p in read[tag]] == [(s, f32(v)) for s, v in points]


def test_new_style_tensor_scalars_are_read(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard (the real event writer) is not installed")
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(tmp_path))
    for step, value in [(1, 0.25), (2, 0.125)]:
        tensor = TensorProto(dtype=1, float_val=[value])  # DT_FLOAT, as SummaryWriter(new_style=True) writes
        writer.add_event(Event(wall_time=1.0, step=step, summary=Summary(value=[Summary.Value(tag="loss/x",
                                                                                               tensor=tensor)])))
    writer.close()
    read = read_scalars(tmp_path.glob("events.out.tfevents.*"))
    assert [(p.step, p.value) for p in read["loss/x"]] == [(1, 0.25), (2, 0.125)]


def test_real_sd_scripts_events_match_tensorboards_own_reader():
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                             reason="tensorboard is not installed")
    folder = next(REAL_RUN.glob("logs/*/network_train"))
    acc = ea.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    ours = read_scalars(folder.glob("events.out.tfevents.*"))
    assert sorted(ours) == sorted(acc.Tags()["scalars"])
    for tag in ours:
        assert [(p.step, p.value) for p in ours[tag]] == [(e.step, e.value) for e in acc.Scalars(tag)]
    assert {"loss/current", "loss/average", "loss/epoch_average", "lr/unet"} <= set(ours)
    assert [p.step for p in ours["loss/epoch_average"]] == [1, 2]  # step = epoch number


def test_a_record_still_being_written_ends_the_read(tmp_path):
    path = write_events(tmp_path, {"loss/current": [(s, float(s)) for s in range(1, 11)]})
    data = path.read_bytes()
    for cut in (3, 10, 25):
        torn = tmp_path / f"torn{cut}"
        torn.write_bytes(data[:-cut])
        steps = [p.step for p in read_file_scalars(torn)["loss/current"]]
        assert steps == list(range(1, 10))


def test_a_corrupt_record_ends_the_read(tmp_path):
    path = write_events(tmp_path, {"loss/current": [(s, float(s)) for s in range(1, 11)]})
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # inside the last record's payload: its CRC no longer matches
    path.write_bytes(bytes(data))
    assert [p.step for p in read_file_scalars(path)["loss/current"]] == list(range(1, 10))


def test_a_resumed_runs_second_file_wins_for_repeated_steps(tmp_path):
    first = write_events(tmp_path / "a", {"loss/current": [(1, 1.0), (2, 2.0), (3, 3.0)]}, wall_time=100.0)
    second = write_events(tmp_path / "b", {"loss/current": [(3, 30.0), (4, 40.0)]}, wall_time=200.0)
    for order in ([first, second], [second, first]):
        merged = read_scalars(order)["loss/current"]
        assert [(p.step, p.value) for p in merged] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_crc32c_known_answer():
    # CRC-32C("123456789") = 0xE3069283 (RFC 3720); masked as TFRecord does
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def test_a_file_that_is_not_an_event_file_reads_as_empty_or_fails_cleanly(tmp_path):
    text = tmp_path / "events.out.tfevents.1.x"
    text.write_text("loss,1.0\n" * 20)
    assert read_file_scalars(text) == {}
    with pytest.raises(MedsynthError, match="cannot read"):
        read_file_scalars(tmp_path / "absent")
