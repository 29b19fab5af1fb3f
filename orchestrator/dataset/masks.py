"""The mask stage of `dataset build --masks auto|DIR`: every written training image gets its loss mask as its
alpha channel and becomes `<image_id>.png` (RGBA), which sd-scripts reads with `alpha_mask = true` on the subset
(docs/masked_loss_README.md at the pinned commit; `medsynth train --set masked_loss=true` renders it).

Why alpha masks rather than mask images in a `conditioning_data_dir`: a subset with `conditioning_data_dir` turns
the whole dataset into sd-scripts' ControlNet dataset (config_util.py:320 and :426), whose schema has no
`class_tokens` and no `is_reg`, and a dataset mixing it with plain subsets fails the DreamBooth schema. Alpha masks
keep the DreamBooth dataset (regularization subsets, several classes, validation split), are cached with the
latents (train_util.py:2710) and flipped with the image (train_util.py:1599).

auto: the lesion segmentation of the ABCD features (vision/lesion.lesion_region) widened by `mask_margin` of the
long side, inside the field of view. DIR: the user's masks (ISIC 2018 Task 1: `<image_id>_segmentation.png`,
else `<image_id>.png`), white = lesion (> 127), scaled to the training image and widened by the same margin.
An image whose mask is missing, unreadable, of another shape or empty (auto: no lesion found) is skipped with
the reason, as a missing image is; `--strict` makes it fatal, naming the mask file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from orchestrator.common.atomic import write_atomic
from orchestrator.common.errors import MedsynthError
from orchestrator.common.workers import STALL_TIMEOUT, run_parallel
from orchestrator.dataset.images import ImageResult
from orchestrator.vision.lesion import lesion_region, widened

AUTO = "auto"
MASK_SUFFIXES = ("_segmentation.png", ".png")   # looked for in this order
SHAPE_TOLERANCE = 0.01                          # relative aspect-ratio difference a user mask may have


@dataclass(frozen=True)
class MaskJob:
    image_id: str
    image: Path                    # the written training image; replaced by <stem>.png with the mask as alpha
    mask: Path | None              # the user's mask; None: auto
    source_size: tuple[int, int]   # the source image's (width, height): a user mask must have its shape
    margin: float


@dataclass(frozen=True)
class MaskResult:
    image_id: str
    path: Path | None              # the RGBA PNG written; None when the image is skipped
    reason: str | None = None      # short, for the manifest: "mask missing", "no lesion found", ...
    detail: str | None = None      # the same naming the file, for --strict


def check_masks_setting(masks: str | None, images: tuple[Path, ...]) -> None:
    """A mask folder must exist and be none of the image folders (its <id>.png could be the image itself)."""
    if masks is None or masks == AUTO:
        return
    folder = Path(masks)
    if not folder.is_dir():
        raise MedsynthError(f"{folder}: mask folder not found (--masks takes 'auto' or a folder of masks)")
    if any(folder.resolve() == image_dir.resolve() for image_dir in images):
        raise MedsynthError(f"{folder}: the mask folder is an image folder: give the masks their own folder")


def find_mask(image_id: str, folder: Path) -> Path | None:
    for suffix in MASK_SUFFIXES:
        candidate = folder / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def add_masks(results: Mapping[str, ImageResult], output_paths: dict[str, str], root: Path, *, masks: str,
              margin: float, workers: int, strict: bool, progress: bool) -> dict[str, ImageResult]:
    """Give each written image (output_paths: image id -> path relative to `root`) its mask; returns the results
    with the images that got none turned into skips (their file removed) and updates output_paths to the PNGs."""
    folder = None if masks == AUTO else Path(masks)
    jobs, missing = [], {}
    for image_id, result in results.items():
        if result.error is not None:
            continue
        mask = find_mask(image_id, folder) if folder is not None else None
        if folder is not None and mask is None:
            names = " or ".join(f"{image_id}{s}" for s in MASK_SUFFIXES)
            missing[image_id] = MaskResult(image_id, None, "mask missing", f"no {names} in {folder}")
            continue
        jobs.append(MaskJob(image_id, root / output_paths[image_id], mask,
                            (result.width or 0, result.height or 0), margin))
    with tqdm(total=len(jobs), desc="masks", unit="img", disable=not progress) as bar:
        done = run_parallel(_mask_one, jobs, workers=workers, stall_timeout=STALL_TIMEOUT,
                            describe=lambda job: f"mask of {job.image}", on_result=lambda _: bar.update())
    out = dict(results)
    for outcome in [*missing.values(), *done]:
        if outcome.path is not None:
            output_paths[outcome.image_id] = outcome.path.relative_to(root).as_posix()
            continue
        if strict:
            raise MedsynthError(f"image {outcome.image_id}: {outcome.detail} (strict)")
        (root / output_paths.pop(outcome.image_id)).unlink(missing_ok=True)
        out[outcome.image_id] = replace(out[outcome.image_id], error=outcome.reason)
    return out


def _mask_one(job: MaskJob) -> MaskResult:
    image = cv2.imread(str(job.image), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:  # written by this build a moment ago: not a per-image problem of the input
        raise MedsynthError(f"cannot read back {job.image}")
    h, w = image.shape[:2]
    if job.mask is None:
        region = lesion_region(image, job.margin)
        if not region.any():
            return MaskResult(job.image_id, None, "no lesion found",
                              f"no lesion found in {job.image.name} for --masks auto")
    else:
        region, reason, detail = _user_region(job.mask, job.source_size, (w, h), job.margin)
        if region is None:
            return MaskResult(job.image_id, None, reason, detail)
    ok, encoded = cv2.imencode(".png", np.dstack([image, region.astype(np.uint8) * 255]))
    if not ok:
        raise MedsynthError(f"cannot encode {job.image} as PNG")
    dst = job.image.with_suffix(".png")
    write_atomic(dst, encoded.tobytes())
    if dst != job.image:
        os.unlink(job.image)
    return MaskResult(job.image_id, dst)


def _user_region(path: Path, source_size: tuple[int, int], size: tuple[int, int],
                 margin: float) -> tuple[np.ndarray | None, str | None, str | None]:
    """(mask at `size` or None, reason, detail)."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    if mask is None:
        return None, "mask unreadable", f"{path}: unreadable (not an image OpenCV decodes)"
    (sw, sh), (mh, mw) = source_size, mask.shape
    if abs(mw * sh - mh * sw) > SHAPE_TOLERANCE * mw * sh:
        return None, "mask shape differs", f"{path}: {mw}x{mh} is not the shape of the image ({sw}x{sh})"
    if (mw, mh) != size:
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
    region = mask > 127
    if not region.any():
        return None, "mask empty", f"{path}: no white (lesion) pixel"
    return widened(region, margin), None, None
