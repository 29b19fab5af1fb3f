"""The image files sd-scripts trains on: what it globs for in a dataset's image_dir (train_util.IMAGE_EXTENSIONS
at the pinned commit, each suffix in lower and upper case; .avif and .jxl only with optional Pillow plugins that
medsynth does not install)."""

from __future__ import annotations

from pathlib import Path

TRAINING_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def is_training_image(path: Path) -> bool:
    return path.suffix.lower() in TRAINING_IMAGE_SUFFIXES
