"""The memorization screen of `medsynth evaluate` and `medsynth generate --drop-memorized`: does a synthetic
image copy a training image?

A diffusion model can reproduce training images (Carlini et al. 2023); in medicine such a copy leaks a patient's
image. Each image becomes a pixel-space embedding: a THUMB x THUMB grayscale thumbnail (area-averaged, so
re-encoding, resizing and light noise barely move it), normalised to zero mean and unit norm. Similarity is the
Pearson correlation of two thumbnails, the maximum over the 8 flips and rotations of the synthetic one
(dermoscopy has no "up") and over centre crops of the real one (CROPS of its width times CROPS of its height:
training crops images to its resolution buckets, so a memorized image may be a crop of its source). Every
synthetic image gets its nearest real image and that similarity.

The threshold is calibrated on the real set itself: each real image's nearest *other* real image is a pair of
distinct lesions, so those similarities show how alike unrelated dermoscopy images get (dark blob, skin, round
vignette). The threshold is their 95th percentile plus half of the gap from there to 1 (halfway to identical):
above nearly every distinct-lesion pair, and still below the copies, which score >= 0.99. With fewer than
MIN_REAL real images there is no such distribution to speak of: no threshold, nothing flagged, and the screen
says the calibration is unreliable. Measured on the 40 demo images: docs/evaluation.md.

Pure computation on decoded images: callers decode (BGR or grayscale uint8 arrays), JPEGs with a long side of at
least DECODE_SIZE, so that both commands embed a file alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

THUMB = 32
# decode JPEGs at a reduction keeping 8x the thumbnail: at 1/8 a partial edge block shifts the dark vignette
# enough to cost a copy 0.02
DECODE_SIZE = 8 * THUMB
QUANTILE = 0.95
MARGIN = 0.5            # the share of the way from the quantile to 1 the threshold sits
MIN_REAL = 5
QUERY_CHUNK = 32         # queries per product: 32 x 8 x (real images x 9) floats, ~90 MB at 10,000 real images
CROPS = (1.0, 0.9, 0.8)  # the centre share of each side kept; 1.0 first: row 0 of an embedding is the whole image
METHOD = (f"grayscale {THUMB}x{THUMB} area-averaged thumbnail, zero mean and unit norm; similarity = Pearson "
          f"correlation, the maximum over the 8 flips and rotations of the synthetic image and over the "
          f"{len(CROPS) ** 2} centre crops (width and height each {', '.join(map(str, CROPS))}) of the real one")


def _thumbnail(gray: np.ndarray) -> np.ndarray:
    thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return (thumb / norm if norm > 0 else thumb).ravel()


def embed(image: np.ndarray) -> np.ndarray:
    """The normalised thumbnails of one decoded image's centre crops, (len(CROPS) ** 2, THUMB * THUMB) float32;
    row 0 is the whole image."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    h, w = gray.shape
    rows = []
    for fx in CROPS:
        for fy in CROPS:
            dx, dy = round(w * (1 - fx) / 2), round(h * (1 - fy) / 2)
            rows.append(_thumbnail(gray[dy:h - dy, dx:w - dx]))
    return np.stack(rows)


def _dihedral(vector: np.ndarray) -> np.ndarray:
    """The 8 flips/rotations of a thumbnail, as rows (8, THUMB * THUMB)."""
    square = vector.reshape(THUMB, THUMB)
    turns = [np.rot90(square, k) for k in range(4)]
    return np.stack([t.ravel() for t in turns + [np.fliplr(t) for t in turns]])


def similarity_matrix(queries: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(len(queries), len(real)) correlations of embeddings (n, crops, d) and (m, crops, d): each the best over
    the 8 orientations of the query's whole image and the real image's crops."""
    if len(queries) == 0 or len(real) == 0:
        return np.zeros((len(queries), len(real)), np.float32)
    flat_real = real.reshape(-1, real.shape[-1]).T                   # (d, m * crops): one BLAS product
    rows = []
    for start in range(0, len(queries), QUERY_CHUNK):
        variants = np.concatenate([_dihedral(q[0]) for q in queries[start:start + QUERY_CHUNK]])
        products = (variants @ flat_real).reshape(-1, 8, len(real), real.shape[1])
        rows.append(products.max(axis=(1, 3)))
    return np.concatenate(rows)


def feature_similarity(queries: np.ndarray, real: np.ndarray) -> np.ndarray:
    """The same for unit-norm network features (n, 8, d) and (m, 8, d) of each image's 8 flips and rotations: the
    cosine of the best query orientation with the real image as it is (row 0)."""
    if len(queries) == 0 or len(real) == 0:
        return np.zeros((len(queries), len(real)), np.float32)
    return np.einsum("nqd,md->nqm", queries, real[:, 0]).max(axis=1)


FEATURE_METHOD = ("{network} features of the image (2048-d pool, unit norm); similarity = cosine, the maximum over "
                  "the 8 flips and rotations of the synthetic image")
Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Calibration:
    threshold: float | None       # None: too few real images to calibrate
    real_images: int
    nearest_real: list[float]     # each real image's similarity to its nearest other real image
    note: str

    def as_dict(self) -> dict[str, Any]:
        sims = np.asarray(self.nearest_real, float)
        return {"threshold": self.threshold, "real_images": self.real_images, "quantile": QUANTILE,
                "margin": MARGIN, "note": self.note,
                "real_nearest": None if not len(sims) else {
                    "median": round(float(np.median(sims)), 4),
                    "quantile": round(float(np.quantile(sims, QUANTILE)), 4), "max": round(float(sims.max()), 4)}}


def calibrate(real: np.ndarray, similarity: Similarity = similarity_matrix) -> Calibration:
    """The threshold from the real set's nearest-other-image similarities (module doc)."""
    n = len(real)
    nearest: list[float] = []
    if n >= 2:
        sims = similarity(real, real)
        np.fill_diagonal(sims, -np.inf)  # the nearest *other* image
        nearest = [round(float(s), 4) for s in sims.max(axis=1)]
    if n < MIN_REAL:
        return Calibration(None, n, nearest, f"calibration unreliable: {n} real images, {MIN_REAL} needed; "
                                             f"nothing flagged")
    q = float(np.quantile(nearest, QUANTILE))
    threshold = round(q + MARGIN * (1 - q), 4)
    return Calibration(threshold, n, nearest,
                       f"{QUANTILE:.0%} quantile of the {n} real images' similarity to their nearest other real "
                       f"image ({q:.4f}), plus {MARGIN:.0%} of the gap to 1")


@dataclass(frozen=True)
class Match:
    synthetic: str
    nearest_real: str | None
    similarity: float | None
    flagged: bool | None          # None: not screened (unreadable, or no threshold)


@dataclass(frozen=True)
class Screen:
    calibration: Calibration
    matches: list[Match]
    method: str = METHOD

    @property
    def flagged(self) -> list[Match]:
        return [m for m in self.matches if m.flagged]

    @property
    def screened(self) -> int:
        return sum(m.flagged is not None for m in self.matches)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "calibration": self.calibration.as_dict(),
                "flagged": len(self.flagged), "screened": self.screened,
                "images": [vars(m).copy() for m in self.matches]}


def screen(real: Sequence[tuple[str, np.ndarray | None]], synthetic: Sequence[tuple[str, np.ndarray | None]],
           *, similarity: Similarity = similarity_matrix, method: str = METHOD) -> Screen:
    """Nearest real image and similarity of every synthetic image, flagged against the threshold calibrated on
    `real`; (name, embedding) pairs, None for a file that did not decode (left out / not screened). The default
    space is the pixel thumbnails of embed(); `similarity` and `method` give another (feature_similarity)."""
    real_names = [name for name, e in real if e is not None]
    shapes = [e.shape for _, e in (*real, *synthetic) if e is not None]
    empty = np.zeros((0, *(shapes[0] if shapes else (1, 1))), np.float32)
    real_vectors = np.stack([e for _, e in real if e is not None]) if real_names else empty
    calibration = calibrate(real_vectors, similarity)
    decoded = [(name, e) for name, e in synthetic if e is not None]
    sims = similarity(np.stack([e for _, e in decoded]) if decoded else empty, real_vectors)
    found = {}
    for (name, _), row in zip(decoded, sims):
        if len(row):
            best = int(row.argmax())
            similarity = round(float(row[best]), 4)
            flagged = None if calibration.threshold is None else similarity >= calibration.threshold
            found[name] = Match(name, real_names[best], similarity, flagged)
    return Screen(calibration, [found.get(name, Match(name, None, None, None)) for name, _ in synthetic], method)
