"""Hair detection: the seed's edge-length test, measured at one working size so it does not depend on resolution.

The seed (grayscale -> GaussianBlur 5x5 -> Canny(50, 250) -> external contours -> keep arcLength >= 100 px ->
hairy when the kept lengths sum to > 4000 px) ran on each file at its native size, so the same lesion could
flip with resolution: edge length grows with the image's linear size, and the fixed 5x5 blur smooths a
6000x4000 photo far less than a 640x480 one.

Here every image is first resized to WORKING_SIZE on its long side (INTER_AREA down, INTER_LINEAR up), the
seed's pipeline runs unchanged on that, and lengths are expressed in units of the image's long side:

    hair_score = (sum of lengths of contours >= MIN_CONTOUR) / long side;  hairy when > HAIR_THRESHOLD

Calibration: the seed's 100 px / 4000 px are taken to hold on a REFERENCE_SIZE = 512 px long side, i.e.
MIN_CONTOUR = 100/512 and HAIR_THRESHOLD = 4000/512 ~= 7.8 long sides of edge (200 px / 8000 px at the
1024 px working size). Evidence, from `bench/hair_calibration.py` on the 40 CC0 demo images (1022x767 and
1504x1129), each scored as stored, 2x upscaled, 0.5x downscaled and upscaled to 6000 px (JPEG q95 between):
  reference 512:        no decision flips at any of the four sizes; the score nearest the threshold is
                        0.89x of it. Hairy: the two images covered in dark hair (ISIC_0000043, ISIC_0000074).
                        It is the largest flip-free reference tried (384 is also flip-free, less sensitive).
  reference 640..1536:  6-28 flips over the three other sizes (most at 0.5x). At those thresholds (6.3-2.6
                        long sides) the decision hangs on the dermatoscope's circular vignette (about 2.5 long
                        sides of edge on its own) and on sharp lesion borders, whose contours break or merge
                        differently at each resolution.
  the seed itself (its px thresholds at the file's own size): 13 hairy as stored, 36 at 2x, 2 at 0.5x.
So the flag is conservative: sparse thin hairs are below the seed method's sensitivity (ISIC_0000003 scores 0
at every size; ISIC_0000019 scores only its vignette); hair-dominated images are called hairy, at any size.
"""

from __future__ import annotations

import cv2
import numpy as np

from orchestrator.vision import resized_long_side

WORKING_SIZE = 1024      # long side, px, at which the edges are measured
REFERENCE_SIZE = 512     # long side, px, at which the seed's 100 px / 4000 px thresholds are taken to hold
MIN_CONTOUR = 100 / REFERENCE_SIZE      # shortest contour counted, in long sides
HAIR_THRESHOLD = 4000 / REFERENCE_SIZE  # hairy when the score exceeds this (long sides of edge length)


def working_image(bgr: np.ndarray) -> np.ndarray:
    """bgr resized so its long side is WORKING_SIZE (aspect kept)."""
    return resized_long_side(bgr, WORKING_SIZE)


def contour_lengths(bgr: np.ndarray) -> np.ndarray:
    """Lengths of the seed's external edge contours at WORKING_SIZE, in long sides (all of them, unfiltered)."""
    work = working_image(bgr)
    gray = cv2.cvtColor(work, cv2.COLOR_BGR2GRAY) if work.ndim == 3 else work
    edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 250)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return np.array([cv2.arcLength(c, False) for c in contours], dtype=np.float64) / WORKING_SIZE


def hair_score(bgr: np.ndarray) -> float:
    """Total length of the edge contours at least MIN_CONTOUR long, in long sides. Pure function."""
    lengths = contour_lengths(bgr)
    return float(lengths[lengths >= MIN_CONTOUR].sum())


def is_hairy(score: float) -> bool:
    return score > HAIR_THRESHOLD
