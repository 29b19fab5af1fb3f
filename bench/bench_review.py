"""`medsynth review` on a run of realistic size: PROMPTS prompts x EPOCHS epochs of 1024 px sample PNGs,
the demo dataset's training images beside them, and STEPS steps of TensorBoard scalars (4 tags, as sd-scripts logs).

Prints: the first review (every thumbnail made), the median of REPEATS re-runs (thumbnails reused: what a user
watching a training run pays each time), and reading the event file alone. Needs tensorboard (its writer makes
the events file); runs on the CPU.

Run: .venv/bin/python bench/bench_review.py [--prompts 10] [--epochs 20] [--steps 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.train.settings import load_settings  # noqa: E402
from orchestrator.train.plan import prepare, run_record  # noqa: E402
from orchestrator.review.grid import review_run  # noqa: E402
from orchestrator.review.write import write_run_review  # noqa: E402
from orchestrator.runs.folder import write_run_dir  # noqa: E402
from orchestrator.runs.outputs import event_files  # noqa: E402
from orchestrator.runs.tfevents import read_scalars  # noqa: E402


def make_run(tmp: Path, prompts: int, epochs: int) -> Path:
    ds = tmp / "demo"
    subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "dataset", "build", "--csv",
                    str(ROOT / "datasets/demo/metadata.csv"), "--images", str(ROOT / "datasets/demo/images"),
                    "--out", str(ds), "--quiet"], cwd=ROOT, check=True, capture_output=True)
    model = tmp / "sdxl.safetensors"
    model.write_bytes(b"-")
    settings = load_settings(preset_name="default", cwd=tmp,
                             options={"dataset": str(ds), "pretrained_model_name_or_path": str(model)},
                             sets=[f"runs_dir={json.dumps(str(tmp / 'runs'))}", f"max_train_epochs={epochs}",
                                   f"num_sample_prompts={prompts}", "train_batch_size=1"])
    plan = prepare(settings, gpus=None, run_name="bench")
    record = run_record(plan, argv=["python"], cwd=tmp, env_changes={}, commits={}, packages={}, gpu={})
    return write_run_dir(plan.run_dir, plan.files, command_sh="#!/bin/sh\n", record=record)


def write_samples(run: Path, prompts: int, epochs: int) -> int:
    (run / "sample").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1024]
    base = np.stack([(xx // 4) % 256, (yy // 4) % 256, ((xx + yy) // 8) % 256], axis=2).astype(np.uint8)
    count = 0
    for epoch in range(1, epochs + 1):
        for index in range(prompts):
            image = cv2.add(base, rng.integers(0, 24, base.shape, dtype=np.uint8))
            name = f"melanoma_lora_e{epoch:06d}_{index:02d}_20261126{epoch:02d}{index:02d}00_{1000 + index}.png"
            cv2.imwrite(str(run / "sample" / name), image)
            count += 1
    return count


def write_events(run: Path, steps: int, epochs: int) -> Path:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder = run / "logs" / "20261126000000" / "network_train"
    writer = EventFileWriter(str(folder))
    for step in range(1, steps + 1):
        for tag, value in (("loss/current", 0.1 + 1 / step), ("loss/average", 0.1 + 2 / step),
                           ("lr/unet", 1e-5), ("lr/group0", 1e-5)):
            writer.add_event(Event(wall_time=float(step), step=step,
                                   summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))
    for epoch in range(1, epochs + 1):
        writer.add_event(Event(wall_time=float(steps), step=epoch, summary=Summary(
            value=[Summary.Value(tag="loss/epoch_average", simple_value=0.1 + 1 / epoch)])))
    writer.close()
    return next(folder.iterdir())


def review_once(run: Path) -> float:
    start = time.perf_counter()
    review = review_run(run)
    write_run_review(review, run, columns=review.columns)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), args.prompts, args.epochs)
        samples = write_samples(run, args.prompts, args.epochs)
        events = write_events(run, args.steps, args.epochs)
        first = review_once(run)
        again = [review_once(run) for _ in range(args.repeats)]
        reads = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            read_scalars(event_files(run))
            reads.append(time.perf_counter() - start)
        size_mb = events.stat().st_size / 1e6
    print(f"review of {samples} samples ({args.prompts} prompts x {args.epochs} epochs, 1024 px PNG), "
          f"{args.steps} steps of scalars ({size_mb:.1f} MB events):")
    print(f"  first review (all thumbnails made): {first:.2f} s")
    print(f"  re-run (thumbnails reused), median of {args.repeats}: {statistics.median(again):.2f} s "
          f"(min {min(again):.2f}, max {max(again):.2f})")
    print(f"  reading the event file alone, median of {args.repeats}: {statistics.median(reads):.2f} s "
          f"({size_mb / statistics.median(reads):.1f} MB/s)")


if __name__ == "__main__":
    main()
