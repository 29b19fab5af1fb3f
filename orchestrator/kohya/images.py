"""The image files sd-scripts trains on: what it globs for in a dataset's image_dir (train_util.IMAGE_EXTENSIONS
at the pinned commit, each suffix in lower and upper case; .avif and .jxl only with optional Pillow plugins that
medsynth does not install)."""

from __future__ import annotations

from pathlib import Path

TRAINING_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def is_training_image(path: Path) -> bool:
    return path.suffix.lower() in TRAINING_IMAGE_SUFFIXES


def training_images(folder: Path, recursive: bool) -> list[Path]:
    """The image files in `folder` (and below it, with recursive), sorted; hidden files are left out."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    # the files sd-scripts trains on: a dataset folder's real set is exactly what its LoRA learnt from
    return sorted(p for p in pattern if p.is_file() and is_training_image(p) and not p.name.startswith("."))
