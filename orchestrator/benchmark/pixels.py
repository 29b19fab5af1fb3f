"""Every benchmark image decoded once, as size x size RGB (shorter side resized with area averaging, then the
centre square), kept in <out>/cache/ so that a re-run, a Slurm task or another arm does not decode again.

The cache is one .npy of all images and a JSON index of (key, path, size in bytes, mtime) in the same order; it is
used only when the index matches the images asked for exactly, else everything is decoded again (a changed or
moved file changes its entry). Decoding runs on threads (orchestrator.common.workers: no fork) with a progress bar.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from orchestrator.common.atomic import write_atomic
from orchestrator.common.errors import MedsynthError
from orchestrator.common.workers import STALL_TIMEOUT, run_parallel
from orchestrator.dataset.images import decode_reduced


def square(bgr: np.ndarray, size: int) -> np.ndarray:
    """The centre square of an image whose shorter side is brought to `size`, as RGB uint8."""
    height, width = bgr.shape[:2]
    scale = size / min(height, width)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    resized = cv2.resize(bgr, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (new[1] - size) // 2, (new[0] - size) // 2
    return np.ascontiguousarray(resized[top:top + size, left:left + size, ::-1])


def decode(path: Path, size: int) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MedsynthError(f"{path}: cannot read the image: {exc.strerror or exc}") from None
    bgr = decode_reduced(data, size)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise MedsynthError(f"{path}: not a readable colour image (corrupt, truncated, grayscale or with alpha)")
    return square(bgr, size)


def _index(keys: Sequence[str], paths: dict[str, Path], size: int) -> list:
    entries = []
    for key in keys:
        try:
            stat = paths[key].stat()
        except OSError as exc:
            raise MedsynthError(f"{paths[key]}: cannot read the image: {exc.strerror or exc}") from None
        entries.append([key, str(paths[key]), stat.st_size, stat.st_mtime_ns])
    return [size, entries]


def load_pixels(keys: Sequence[str], paths: dict[str, Path], size: int, cache_dir: Path, *, workers: int,
                progress: bool) -> np.ndarray:
    """(len(keys), size, size, 3) uint8, in the order of `keys`."""
    index = _index(keys, paths, size)
    array_path, index_path = cache_dir / f"images-{size}.npy", cache_dir / f"images-{size}.json"
    try:
        if json.loads(index_path.read_text(encoding="utf-8")) == index:
            cached = np.load(array_path, mmap_mode="r")   # a Slurm task reads only the images it trains on
            if cached.shape == (len(keys), size, size, 3):
                return cached
    except (OSError, ValueError):
        pass  # no cache yet, or a damaged one: decode again
    bar = tqdm(total=len(keys), desc=f"decoding images at {size} px", unit="img", disable=not progress)
    pixels = run_parallel(lambda key: decode(paths[key], size), list(keys), workers=workers,
                          stall_timeout=STALL_TIMEOUT, describe=lambda key: str(paths[key]),
                          on_result=lambda _: bar.update())
    bar.close()
    array = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_name(f".{array_path.stem}.tmp{os.getpid()}.npy")
    try:
        np.save(tmp, array)
        os.replace(tmp, array_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_atomic(index_path, json.dumps(index))
    return array
