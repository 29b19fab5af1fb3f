"""The image stage: one worker per image reads it once and validates, hashes, scores hair and writes the
training JPEG, from a single decode (two when the output is larger than the hair working size).

Decoding is the cost at ISIC sizes (a 6000x4000 JPEG is 24 Mpx), so large JPEGs are decoded at 1/2, 1/4
or 1/8 scale by libjpeg itself (cv2.IMREAD_REDUCED_COLOR_*): the largest reduction whose result is still
at least as large as both the hair working size and the output resolution. Hair (and ITA) are always
measured on the reduction the working size alone gives, so the cached score does not depend on the
resolution of the build that computed it; an output resolution above WORKING_SIZE costs a second decode.
EXIF orientation is ignored (IMREAD_IGNORE_ORIENTATION), so the stored width/height are the file's own and
the output keeps the source's pixel orientation, like a --no-resize link would; dermoscopy has no "up".

Per-image problems never raise: they come back as ImageResult.error, a short reason the caller records:
"missing", "not a plain file" (folder, FIFO, device), "empty file", "unreadable", "corrupt" (no decodable
image), "truncated" (JPEG without an end-of-image marker after its last scan, PNG without IEND, or headers
cut short), "grayscale" (a 1-component JPEG, a gray PNG), "cmyk" (a 4-component JPEG), "alpha channel"
(a 4-channel PNG or other format); the checks before any decode are in orchestrator.dataset.jpeg. A colour
JPEG whose three channels happen to be equal is accepted: it is an RGB file, and telling a gray-looking
lesion from a gray image is not a file check.

With `skin_tone`, the same decoded image also gives the skin's tone estimate (vision/skin_tone.py), so the
tone costs no second decode.

A JSON cache (source sha256 -> width, height, hair score[, ITA, unreliability reason], for one hair algorithm
version and one ITA version) lets a re-run skip the decode: with a warm cache and `reuse` (an earlier output for the same bytes
and resolution), an image costs one read for the hash and one link. Small runs stay in this process
(see _POOL_MIN_JOBS).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.jpeg import check_container, jpeg_header
from orchestrator.vision.hair import REFERENCE_SIZE, WORKING_SIZE, hair_score, is_hairy, working_image
from orchestrator.vision.skin_tone import ITA_ALGORITHM, ToneEstimate, estimate_tone
from orchestrator.common.workers import STALL_TIMEOUT, run_parallel

# bump when hair_score's method changes: cached scores of another version are ignored
# (v2: always measured on the working-size decode; v1 used the output's, which depended on the resolution)
HAIR_ALGORITHM = f"seed-canny-contours/v2/work{WORKING_SIZE}/ref{REFERENCE_SIZE}"
JPEG_QUALITY = 95
_FICLONE = 0x40049409  # linux/fs.h: share the source's blocks copy-on-write (btrfs, xfs), never its inode
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


@dataclass(frozen=True)
class ImageJob:
    image_id: str
    src: Path
    dst: Path                      # the final training image path; its folder exists
    resolution: int | None         # long side of the output; None = --no-resize (a copy of the original)
    reuse: Path | None = None      # an earlier build's output for the same sha256 and resolution
    skin_tone: bool = False        # also estimate the skin's tone


@dataclass(frozen=True)
class ImageResult:
    image_id: str
    sha256: str | None
    width: int | None              # the source's size
    height: int | None
    out_width: int | None          # the written image's size
    out_height: int | None
    hair_score: float | None
    hairy: bool | None
    error: str | None              # None = written; else a short reason ("missing", "truncated", "cmyk", ...)
    tone: ToneEstimate | None = None   # the skin's tone (skin_tone jobs only)


def process_images(jobs: Sequence[ImageJob], *, workers: int, cache_path: Path | None,
                   progress: bool = True, stall_timeout: float = STALL_TIMEOUT) -> list[ImageResult]:
    """Run every job on `workers` threads (orchestrator/common/workers.py: no fork, a watchdog) and return the
    results in job order."""
    cache = _read_cache(cache_path)
    outcomes: list[tuple[ImageResult, list | None]] = []

    def arrived(outcome: tuple[ImageResult, list | None]) -> None:
        outcomes.append(outcome)
        bar.update()

    with tqdm(total=len(jobs), desc="images", unit="img", disable=not progress) as bar:
        try:
            ordered = run_parallel(partial(_process_one, cache=cache), jobs, workers=workers,
                                   stall_timeout=stall_timeout, describe=lambda job: f"image {job.src}",
                                   on_result=arrived)
        finally:
            # saved even when the run is cut short (Ctrl-C, a write error), so the re-run redoes none of this
            # work; new images, and cached ones that gained an ITA
            fresh = {r.sha256: entry for r, entry in outcomes
                     if entry is not None and len(entry) > len(cache.get(r.sha256, ()))}
            if cache_path is not None and fresh:
                _save_cache(cache_path, {**cache, **fresh}, failing=sys.exc_info()[1] is not None)
    return [r for r, _ in ordered]


def output_size(width: int, height: int, resolution: int | None) -> tuple[int, int]:
    """(width, height) with the long side at most `resolution`, aspect kept, never upscaled."""
    scale = 1.0 if resolution is None else resolution / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _process_one(job: ImageJob, cache: dict[str, list]) -> tuple[ImageResult, list | None]:
    """The job's result, plus a new cache entry when the image was analysed here."""
    def failed(reason: str, sha: str | None = None) -> tuple[ImageResult, None]:
        return ImageResult(job.image_id, sha, None, None, None, None, None, None, reason), None

    try:
        st = os.stat(job.src)
    except FileNotFoundError:
        return failed("missing")
    except OSError:
        return failed("unreadable")
    if not stat.S_ISREG(st.st_mode):
        return failed("not a plain file")
    if st.st_size == 0:
        return failed("empty file")
    try:
        data = job.src.read_bytes()
    except OSError:
        return failed("unreadable")
    sha = hashlib.sha256(data).hexdigest()
    kind, problem = check_container(data)
    if problem:
        return failed(problem, sha)

    cached = cache.get(sha)
    if cached is not None and job.skin_tone and len(cached) < 5:
        cached = None  # analysed before without the tone: analyse again (same hair score, plus the tone)
    reuse = job.reuse if job.reuse is not None and job.reuse.is_file() else None
    if cached is not None:
        width, height, score = cached[:3]
        tone = ToneEstimate.restore(cached[3], cached[4]) if job.skin_tone else None
        out_w, out_h = output_size(width, height, job.resolution)
        if job.resolution is None or reuse is not None or (kind == "jpeg" and (out_w, out_h) == (width, height)):
            _output(job.dst, reuse=reuse, copy=job.src)  # no decode at all
            return ImageResult(job.image_id, sha, width, height, out_w, out_h, score, is_hairy(score), None,
                               tone), None

    image, width, height, problem = _decode(data, kind, job.resolution)
    if problem:
        return failed(problem, sha)
    out_w, out_h = output_size(width, height, job.resolution)
    resized = None
    if cached is None:  # else score and tone came from the cache above
        # analysed from the decode a WORKING_SIZE need gives (the one above unless the output is larger):
        # libjpeg's reduced decodes differ from a resize, and the cache keys scores by content alone
        analysed = (decode_reduced(data, WORKING_SIZE) if kind == "jpeg" and (job.resolution or 0) > WORKING_SIZE
                    else image)
        work = working_image(analysed)
        if analysed is image and work.shape[1::-1] == (out_w, out_h):
            resized = work  # the output is the hair image (resolution = WORKING_SIZE): resize once
        score = hair_score(work)
        tone = estimate_tone(analysed) if job.skin_tone else None
    if reuse is not None:
        _output(job.dst, reuse=reuse)
    elif job.resolution is None or (kind == "jpeg" and (out_w, out_h) == (width, height)):
        _output(job.dst, copy=job.src)  # the original is already a fitting JPEG: no re-encode
    else:
        if resized is None:
            resized = (image if (image.shape[1], image.shape[0]) == (out_w, out_h)
                       else cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA))
        ok, encoded = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise MedsynthError(f"cannot encode {job.dst} as JPEG")
        _output(job.dst, data=encoded.tobytes())
    result = ImageResult(job.image_id, sha, width, height, out_w, out_h, score, is_hairy(score), None, tone)
    if cached is not None:
        return result, None
    return result, [width, height, score] + ([tone.ita, tone.reason] if tone is not None else [])


def decode_reduced(data: bytes, need: int) -> np.ndarray | None:
    """A JPEG decoded at the largest libjpeg reduction (1/2, 1/4, 1/8) whose long side stays >= need;
    other formats at full size. BGR, EXIF orientation ignored; None when the bytes do not decode."""
    flags = cv2.IMREAD_COLOR
    header = jpeg_header(data)
    if header is not None:
        long_side = max(header[:2])
        for factor, reduced in _REDUCED:
            if -(-long_side // factor) >= need:  # libjpeg rounds reduced sizes up
                flags = reduced
                break
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)


def _decode(data: bytes, kind: str, resolution: int | None) -> tuple[np.ndarray, int, int, str | None]:
    """(BGR image, source width, source height, problem), reduced where that loses nothing we need."""
    if kind == "jpeg":
        # --no-resize outputs are links: then only the hair working size matters
        image = decode_reduced(data, max(WORKING_SIZE, resolution or 0))
        if image is None:
            return np.empty(0), 0, 0, "corrupt"
        width, height, _ = jpeg_header(data)  # type: ignore[misc]  # validated by check_container
        return image, width, height, None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        return np.empty(0), 0, 0, "corrupt"
    if image.ndim == 2 or image.shape[2] == 1:
        return image, 0, 0, "grayscale"
    if image.shape[2] == 4:
        return image, 0, 0, "alpha channel"
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    return image, image.shape[1], image.shape[0], None


def _output(dst: Path, *, data: bytes | None = None, copy: Path | None = None, reuse: Path | None = None) -> None:
    """Write dst atomically: `data`, a copy of the source `copy`, or the earlier output `reuse` (linked when
    nothing else links it). Failing to write output is not a per-image problem (disk full, permissions), so
    it stops the build."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        if data is not None:
            tmp.write_bytes(data)
        elif reuse is None or not _link_if_alone(reuse, tmp):
            _copy(reuse or copy, tmp)  # type: ignore[arg-type]
        os.replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MedsynthError(f"cannot write {dst}: {e.strerror or e}") from e


def _link_if_alone(src: Path, tmp: Path) -> bool:
    """Hard-link an earlier build's output when nothing else links it (the build it belongs to is replaced
    by this one); an output that an older medsynth linked to a source is copied instead."""
    if src.stat().st_nlink != 1:
        return False
    try:
        os.link(src, tmp)
        return True
    except OSError:  # another file system, or links unsupported
        return False


def _copy(src: Path, tmp: Path) -> None:
    """A copy of src: a reflink where the file system shares blocks copy-on-write, else bytes."""
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            return
        except OSError:
            pass
    shutil.copyfile(src, tmp)


def _valid_entry(entry: object) -> bool:
    """[width, height, hair_score] or [width, height, hair_score, ita or None, unreliability reason or None];
    ITA version 1 wrote no reason, and its entries still give their hair score."""
    return (isinstance(entry, list) and len(entry) in (3, 4, 5)
            and all(isinstance(v, (int, float)) for v in entry[:3])
            and (len(entry) < 4 or entry[3] is None or isinstance(entry[3], (int, float)))
            and (len(entry) < 5 or entry[4] is None or isinstance(entry[4], str)))


def _read_cache(path: Path | None) -> dict[str, list]:
    """The cached entries for this hair algorithm (ITAs only when of this ITA version); an unreadable or
    foreign cache counts as empty."""
    if path is None or not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict) or content.get("algorithm") != HAIR_ALGORITHM:
        return {}
    images = content.get("images")
    if not isinstance(images, dict):
        return {}
    same_ita = content.get("ita_algorithm") == ITA_ALGORITHM
    return {sha: entry if same_ita else entry[:3] for sha, entry in images.items() if _valid_entry(entry)}


def _save_cache(path: Path, entries: dict[str, list], *, failing: bool) -> None:
    """Write the cache; when the run is already failing (a full disk, say), a cache that cannot be written
    too must not replace that first error."""
    try:
        _write_cache(path, entries)
    except MedsynthError:
        if not failing:
            raise


def _write_cache(path: Path, entries: dict[str, list]) -> None:
    text = json.dumps({"algorithm": HAIR_ALGORITHM, "ita_algorithm": ITA_ALGORITHM, "images": entries},
                      sort_keys=True, separators=(",", ":"))
    _output(path, data=(text + "\n").encode("utf-8"))
