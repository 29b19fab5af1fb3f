"""Skin tone as the Individual Typology Angle (ITA) of the skin around the lesion, with Chardon's bands.

    ITA = arctan((L* - 50) / b*) x 180 / pi       (CIE L*a*b*, D65)

Per pixel it is computed as atan2(L* - 50, b*): the same for b* > 0, and defined for the b* <= 0 pixels a
dermatoscope's blue cast gives; the median is then clipped to [-90, 90], so a bluish-white ring reads as
+90 (very light) rather than flipping sign.

L* and b* are on the CIE scale: OpenCV's float conversion gives them directly (its 8-bit Lab would need
L* = L x 100/255 and b* = b - 128). The ITA is the median over a ring of non-lesion skin: the pixels between
RING_INNER and RING_OUTER (fractions of the long side) outside the lesion mask, inside the field of view
(so the dermatoscope's dark vignette and corners never count). When the lesion leaves no such ring, every
field-of-view pixel outside the lesion is used; with none at all, there is no ITA.

Bands (Chardon et al. 1991; Del Bino & Bernerd 2013), each but the first including its lower bound:
  > 55 very light, 41-55 light, 28-41 intermediate, 10-28 tan, -30-10 brown, < -30 dark.
Dermoscopy lights the skin with the dermatoscope's own source, so this is a relative measure between image
sets taken alike, not a calibrated colorimetric reading.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from orchestrator.vision.lesion import ANALYSIS_SIZE, analysis_image, field_of_view, lesion_mask

# bump when the ITA's method (or the lesion mask it rings) changes: cached ITAs of another version are ignored
ITA_ALGORITHM = f"ring-median/v1/analysis{ANALYSIS_SIZE}"
RING_INNER = 0.02   # of the long side: skin this close to the mask edge is left out (blurred lesion border)
RING_OUTER = 0.10   # of the long side: the ring's outer edge
MIN_RING_PIXELS = 64

# (lower bound, band), checked in order: very light needs ITA > 55; every other band includes its lower bound
BANDS: tuple[tuple[float, str], ...] = (
    (55.0, "very light"), (41.0, "light"), (28.0, "intermediate"), (10.0, "tan"), (-30.0, "brown"),
    (-math.inf, "dark"),
)
BAND_NAMES: tuple[str, ...] = tuple(name for _, name in BANDS)


def tone_band(ita: float) -> str:
    """Chardon's band of an ITA in degrees: > 55 very light, 41-55 light, 28-41 intermediate, 10-28 tan,
    -30-10 brown, < -30 dark (55 is light, 41 light, 28 intermediate, 10 tan, -30 brown)."""
    if ita > BANDS[0][0]:
        return BANDS[0][1]
    for lower, name in BANDS[1:]:
        if ita >= lower:
            return name
    return BANDS[-1][1]


def skin_ring(mask: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """The non-lesion skin pixels around the mask (see the module doc), as a boolean array."""
    if not mask.any():
        return fov.copy()
    long_side = max(mask.shape)
    # distance to the nearest lesion pixel: one linear pass, where dilating by a 100 px disc is not. The 5x5
    # chamfer metric (within 2 % of Euclidean) because OpenCV's exact one differs with its thread count
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    ring = (distance > RING_INNER * long_side) & (distance <= RING_OUTER * long_side) & fov
    if ring.sum() >= MIN_RING_PIXELS:
        return ring
    return fov & ~mask


def ita_of_pixels(bgr: np.ndarray, where: np.ndarray) -> float | None:
    """Median ITA in degrees of the selected pixels of a BGR uint8 image; None when none are selected."""
    if not where.any():
        return None
    lab = cv2.cvtColor(bgr.astype(np.float32) / 255, cv2.COLOR_BGR2Lab)[where]
    ita = np.degrees(np.arctan2(lab[:, 0].astype(np.float64) - 50, lab[:, 2].astype(np.float64)))
    return float(np.clip(np.median(ita), -90, 90))


def skin_ita(bgr: np.ndarray, mask: np.ndarray | None = None, fov: np.ndarray | None = None) -> float | None:
    """The ITA of the skin around the lesion. With `mask`/`fov` (from lesion.py, same size as bgr) they are
    reused; otherwise bgr is brought to the analysis size and both are computed here."""
    if mask is None or fov is None:
        bgr = analysis_image(bgr)
        fov = field_of_view(bgr)
        mask = lesion_mask(bgr, fov)
    value = ita_of_pixels(bgr, skin_ring(mask, fov))
    return None if value is None else round(value, 2)
