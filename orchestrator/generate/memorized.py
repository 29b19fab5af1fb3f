"""`medsynth generate --drop-memorized`: every synthetic image is screened against the run's training images (the
dataset's train/ folder: the REAL set `medsynth evaluate DATASET SYNTH` reads) with the memorization screen of
orchestrator/vision/memorization.py, the same embedding and calibration, and the flagged ones are set aside, never
deleted (the user may want to look):

  synthetic/memorized/SYN_<n:07d>.png   the flagged images, moved out of images/
  synthetic/memorized.csv               one row each: synthetic_image, nearest_real_image, similarity, threshold
  synthetic/metadata.csv                rewritten without them

Dropped numbers stay dropped: an image's pixels follow from its seed, prompt and settings, so drawing it again would
make the same copy; generate/run.py neither regenerates nor lists an item whose image is in memorized/. The steps
are ordered so that a run killed between two of them leaves a folder the next run completes: memorized.csv first
(the rows of the files memorized/ holds or receives), then the moves, then metadata.csv (without every image in
memorized/)."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.common.atomic import write_atomic
from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.images import decode_reduced
from orchestrator.generate.outputs import ISIC2020_COLUMNS, EXTRA_COLUMNS, read_synthetic_metadata, write_metadata
from orchestrator.kohya.images import training_images
from orchestrator.vision.memorization import DECODE_SIZE, Screen, embed, screen

MEMORIZED_DIR = "memorized"
MEMORIZED_CSV = "memorized.csv"
CSV_COLUMNS = ("synthetic_image", "nearest_real_image", "similarity", "threshold")


@dataclass(frozen=True)
class Dropped:
    screen: Screen
    moved: list[str]     # the file names this screen moved into memorized/


def training_folder(dataset: Path) -> Path:
    """The dataset's train/ folder, refused before a generation when it holds no image to screen against."""
    train = dataset / "train"
    if not train.is_dir() or not training_images(train, recursive=True):
        raise MedsynthError(f"{train}: no training images: --drop-memorized screens the synthetic images against "
                            f"them (rebuild the dataset, or leave the flag out)")
    return train


def embeddings(files: list[Path], root: Path) -> list[tuple[str, np.ndarray | None]]:
    """(name relative to root, embedding or None when the file does not decode) per file, decoded as `medsynth
    evaluate` decodes them."""
    found = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        image = decode_reduced(data, DECODE_SIZE) if data else None
        found.append((path.relative_to(root).as_posix(), None if image is None else embed(image)))
    return found


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise MedsynthError(f"{path}: not a medsynth memorized.csv: no column '{missing[0]}'")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedsynthError(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from exc


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["synthetic_image"]))
    write_atomic(path, buf.getvalue())


def _unlist(metadata: Path, held: set[str]) -> None:
    """metadata.csv without the rows of the images in memorized/ (left as it is when it lists none of them)."""
    if not metadata.is_file():
        return
    rows = read_synthetic_metadata(metadata)
    kept = [r for r in rows if r["image_name"] not in held]
    if len(kept) < len(rows):
        known = {*ISIC2020_COLUMNS, *EXTRA_COLUMNS}
        write_metadata(metadata, kept, [c for c in rows[0] if c not in known])


def drop_memorized(synthetic: Path, train: Path) -> Dropped:
    """Screen synthetic/images/SYN_*.png against the images under `train` and set the flagged ones aside (module
    doc). Idempotent: a second call finds nothing left to flag and leaves every file's content as it was."""
    images, aside = synthetic / "images", synthetic / MEMORIZED_DIR
    found = screen(embeddings(training_images(train, recursive=True), train),
                   embeddings(sorted(images.glob("SYN_*.png")), images))
    flagged = {m.synthetic: m for m in found.flagged}
    listed = synthetic / MEMORIZED_CSV
    rows = [r for r in _read_rows(listed) if (aside / r["synthetic_image"]).is_file() and
            r["synthetic_image"] not in flagged]
    rows += [{"synthetic_image": m.synthetic, "nearest_real_image": str(train / str(m.nearest_real)),
              "similarity": f"{m.similarity:.4f}", "threshold": f"{found.calibration.threshold:.4f}"}
             for m in flagged.values()]
    _write_rows(listed, rows)
    if flagged:
        aside.mkdir(exist_ok=True)
    for name in flagged:
        os.replace(images / name, aside / name)
    held = {p.stem for p in aside.glob("SYN_*.png")}
    _unlist(synthetic / "metadata.csv", held)
    return Dropped(found, sorted(flagged))


def screen_line(dropped: Dropped) -> str:
    calibration = dropped.screen.calibration
    if calibration.threshold is None:
        return f"medsynth: memorization screen: not screened ({calibration.note}); nothing dropped"
    return (f"medsynth: memorization screen: {len(dropped.moved)} of {dropped.screen.screened} images dropped as "
            f"near-copies of a training image (similarity >= {calibration.threshold:.4f}): moved to "
            f"{MEMORIZED_DIR}/ and listed in {MEMORIZED_CSV}")


def held_line(held: int, count: int) -> str:
    """`held` of the planned images are in memorized/: the folder holds fewer than --count, said plainly."""
    return (f"medsynth: {held} of the {count} images are set aside in {MEMORIZED_DIR}/ as near-copies of training "
            f"images and are not generated again (the same seed draws the same image): images/ and metadata.csv "
            f"hold at most {count - held}")
