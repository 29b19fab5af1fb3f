"""Run folders with sd-scripts-style outputs for the review tests: the real rendered run files (`medsynth train`'s
plan), sample PNGs named as train_util.sample_image_inference names them (solid colours, so a cell's file can be
recognised in the contact sheet), and TensorBoard events written with tensorboard's own event writer."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import toml

from orchestrator.train.settings import load_settings
from orchestrator.runs.folder import write_run_dir
from orchestrator.runs.record import update_record
from orchestrator.train.plan import prepare, run_record

OUTPUT_NAME = "melanoma_lora"


def make_run(root: Path, dataset: Path, *, name: str = "r1", epochs: int = 3, sets: Sequence[str] = (),
             status: str = "running") -> Path:
    """runs/<name>/ exactly as `medsynth train` writes it before sd-scripts starts (status as given)."""
    model = root / "sdxl.safetensors"
    model.write_bytes(b"weights")
    settings = load_settings(preset_name="default", cwd=root,
                             options={"dataset": str(dataset), "pretrained_model_name_or_path": str(model)},
                             sets=[f"runs_dir={json.dumps(str(root / 'runs'))}", f"max_train_epochs={epochs}",
                                   "train_batch_size=1", *sets])
    plan = prepare(settings, gpus=None, run_name=name)
    record = run_record(plan, argv=["python"], cwd=root, env_changes={}, commits={}, packages={}, gpu={})
    run_dir = write_run_dir(plan.run_dir, plan.files, command_sh="#!/bin/sh\n", record=record)
    update_record(run_dir, status=status)
    return run_dir


def make_step_run(root: Path, dataset: Path, *, every: int, sample_at_first: bool = False, **kwargs) -> Path:
    """A run sampling every `every` steps: medsynth always renders sample_every_n_epochs (which wins in
    sd-scripts), so this is a hand-edited train.toml, as a user running sd-scripts by hand would have."""
    run_dir = make_run(root, dataset, **kwargs)
    path = run_dir / "train.toml"
    tables = toml.loads(path.read_text(encoding="utf-8"))
    del tables["sample"]["sample_every_n_epochs"]
    tables["sample"].update(sample_every_n_steps=every, sample_at_first=sample_at_first)
    path.write_text(toml.dumps(tables), encoding="utf-8")
    return run_dir


def colour(number: int, index: int) -> tuple[int, int, int]:
    """A distinct BGR colour per (sampling point, prompt index), far apart in every channel step."""
    return (40 + 50 * (number % 5), 40 + 60 * (index % 4), 220 - 35 * ((number // 5 + index) % 6))


def sample_name(*, epoch: int | None = None, step: int | None = None, index: int, ts: str,
                seed: int | None = None, output_name: str | None = OUTPUT_NAME) -> str:
    """train_util.sample_image_inference's naming at the pin."""
    num = f"e{epoch:06d}" if epoch is not None else f"{step:06d}"
    return (f"{output_name + '_' if output_name else ''}{num}_{index:02d}_{ts}"
            f"{'' if seed is None else '_' + str(seed)}.png")


def write_sample(run_dir: Path, name: str, bgr: tuple[int, int, int], size: int = 64) -> Path:
    folder = run_dir / "sample"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert cv2.imwrite(str(path), np.full((size, size, 3), bgr, np.uint8))
    return path


def write_torn_sample(run_dir: Path, name: str) -> Path:
    """A PNG cut off mid-write (PIL writing in place while the review reads the folder)."""
    ok, data = cv2.imencode(".png", np.full((64, 64, 3), 99, np.uint8))
    assert ok
    path = run_dir / "sample" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes()[: len(data) // 2])
    return path


def write_events(log_dir: Path, scalars: Mapping[str, Sequence[tuple[int, float]]], *, wall_time: float = 1.0e9,
                 filename_suffix: str = "") -> Path:
    """Scalars as sd-scripts' TensorBoard tracker logs them (simple_value summaries), with tensorboard's writer."""
    pytest.importorskip("tensorboard", reason="tensorboard (the real event writer) is not installed")
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    log_dir.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(log_dir), filename_suffix=filename_suffix)
    for tag, points in scalars.items():
        for k, (step, value) in enumerate(points):
            writer.add_event(Event(wall_time=wall_time + k, step=step,
                                   summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))
    writer.close()
    return next(p for p in log_dir.iterdir() if p.name.startswith("events.out.tfevents."))


def touch_older(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - int(seconds * 1e9)))
