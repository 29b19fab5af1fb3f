"""Skin tone as the Individual Typology Angle (ITA) of the skin around the lesion after colour constancy,
with Chardon's bands, and a verdict on whether the angle means anything for this image.

    ITA = arctan((L* - 50) / b*) x 180 / pi       (CIE L*a*b*, D65; L*, b* the medians of the skin ring)

Colour constancy: Shades of Gray (Minkowski p = 6; Finlayson & Trezzi 2004), as Barata et al. 2015 use it,
then a von Kries correction: each channel divided by the illuminant's, relative to green as a camera's white
balance does, so the reference turns neutral and L* (mostly green) keeps the exposure the image has. Where
the illuminant is estimated matters (bench/skin_tone_calibration.py, bench/RESULTS.md): over the whole field
of view, as Barata do for lesion colour, the scene is mostly skin, so the estimate is the skin's own colour
and the correction makes the skin grey (b* < 2.3 on 33 of the 40 demo images, median ITA 88). Here it is estimated over the brightest BRIGHT_SHARE of the
field of view outside the lesion (specular glints of gel and glass, which reflect the dermatoscope's light,
and the palest skin), the nearest thing to a white reference a dermoscopic image has.

The skin is the ring of non-lesion pixels between RING_INNER and RING_OUTER (fractions of the long side)
from the lesion mask, inside the field of view (never the dark vignette); with no such ring, every
field-of-view pixel outside the lesion.

Unreliable (ToneEstimate.reliable False, band None, `reason` says which), rather than a forced band:
  - no skin, or under MIN_SKIN_SHARE of the field of view: the ring is lesion border, hair or vignette;
  - a cast the correction would have to undo by more than MAX_GAIN_RATIO between channels: at that gain one
    channel is mostly noise and JPEG error, and a clipped channel cannot be restored;
  - corrected skin b* < MIN_B: within one just-noticeable colour difference (Delta E*ab 2.3; Sharma 2003) of
    neutral the skin has no measurable yellowness, so the angle is set by noise (b* <= 0, the old "clipped
    at 90", is the extreme of this).
Fitzpatrick types from metadata map to the bands as in Kinyanjui et al. 2020 (I very light ... VI dark).
Dermoscopy lights the skin with the dermatoscope's own source, so even a reliable ITA is a relative measure
between image sets taken alike, not a calibrated colorimetric reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from orchestrator.vision.lesion import ANALYSIS_SIZE, analysis_image, field_of_view, lesion_mask

# bump when the ITA's method (or the lesion mask it rings) changes: cached ITAs of another version are ignored
ITA_ALGORITHM = f"sog6-bright/v2/analysis{ANALYSIS_SIZE}"
RING_INNER = 0.02   # of the long side: skin this close to the mask edge is left out (blurred lesion border)
RING_OUTER = 0.10   # of the long side: the ring's outer edge
MIN_RING_PIXELS = 64
MINKOWSKI_P = 6
BRIGHT_SHARE = 0.05      # the brightest 5 % of the view outside the lesion estimate the illuminant
MIN_SKIN_SHARE = 0.05    # of the field of view
MAX_GAIN_RATIO = 2.0     # largest/smallest channel gain of the correction
MIN_B = 2.3              # CIE b*: one just-noticeable difference
# where the illuminant is estimated; the bench compares them, the pipeline uses "bright"
REFERENCES = ("none", "view", "skin", "bright")

# (lower bound, band), checked in order: very light needs ITA > 55; every other band includes its lower bound
BANDS: tuple[tuple[float, str], ...] = (
    (55.0, "very light"), (41.0, "light"), (28.0, "intermediate"), (10.0, "tan"), (-30.0, "brown"),
    (-math.inf, "dark"),
)
BAND_NAMES: tuple[str, ...] = tuple(name for _, name in BANDS)
FITZPATRICK_TYPES: tuple[str, ...] = ("I", "II", "III", "IV", "V", "VI")
FITZPATRICK_BAND: dict[str, str] = dict(zip(FITZPATRICK_TYPES, BAND_NAMES))


@dataclass(frozen=True)
class ToneEstimate:
    ita: float | None      # degrees, in [-90, 90]; None when no skin was found
    band: str | None       # Chardon band; None when unreliable
    reliable: bool
    reason: str | None     # why unreliable; None when reliable

    @classmethod
    def restore(cls, ita: float | None, reason: str | None) -> ToneEstimate:
        """The estimate whose ita and reason were stored (the image cache keeps only these two)."""
        reliable = ita is not None and reason is None
        return cls(ita, tone_band(ita) if reliable else None, reliable, reason)


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


def illuminant(bgr: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Shades-of-Gray estimate (Minkowski p = MINKOWSKI_P) of the light over the selected pixels, BGR in 0-1."""
    values = bgr[where].astype(np.float64) / 255
    return np.mean(values ** MINKOWSKI_P, axis=0) ** (1 / MINKOWSKI_P)


def reference_pixels(bgr: np.ndarray, mask: np.ndarray, fov: np.ndarray, reference: str) -> np.ndarray | None:
    """Where the illuminant is estimated (see REFERENCES); None for no correction."""
    if reference == "none":
        return None
    if reference == "view":
        return fov
    if reference == "skin":
        return skin_ring(mask, fov)
    if reference != "bright":
        raise ValueError(f"reference {reference!r} is not one of {', '.join(REFERENCES)}")
    candidates = fov & ~mask if (fov & ~mask).any() else fov
    brightness = bgr.max(axis=2)
    cut = np.quantile(brightness[candidates], 1 - BRIGHT_SHARE)
    return candidates & (brightness >= cut)


def skin_lab(bgr: np.ndarray, where: np.ndarray, gains: np.ndarray) -> tuple[float, float]:
    """Median CIE L* and b* of the selected pixels after multiplying BGR by `gains`. OpenCV's float
    conversion gives L* and b* on the CIE scale (its 8-bit Lab would need rescaling)."""
    corrected = np.clip(bgr[where].astype(np.float32) * gains.astype(np.float32), 0, 255) / 255
    lab = cv2.cvtColor(corrected.reshape(-1, 1, 3), cv2.COLOR_BGR2Lab).reshape(-1, 3)
    return float(np.median(lab[:, 0])), float(np.median(lab[:, 2]))


def estimate_tone(bgr: np.ndarray, mask: np.ndarray | None = None, fov: np.ndarray | None = None, *,
                  reference: str = "bright") -> ToneEstimate:
    """The skin tone of a BGR uint8 image (module doc). With `mask`/`fov` (from lesion.py, same size as bgr)
    they are reused; otherwise bgr is brought to the analysis size and both are computed here."""
    if mask is None or fov is None:
        bgr = analysis_image(bgr)
        fov = field_of_view(bgr)
        mask = lesion_mask(bgr, fov)
    ring = skin_ring(mask, fov)
    if not ring.any():
        return ToneEstimate(None, None, False, "no skin outside the lesion")
    where = reference_pixels(bgr, mask, fov, reference)
    if where is None:
        gains = np.ones(3)
    else:
        e = np.maximum(illuminant(bgr, where), 1e-3)
        gains = e[1] / e
    lightness, b = skin_lab(bgr, ring, gains)
    ita = round(float(np.clip(math.degrees(math.atan2(lightness - 50, b)), -90, 90)), 2)
    share = ring.sum() / max(int(fov.sum()), 1)
    if share < MIN_SKIN_SHARE:
        return ToneEstimate(ita, None, False, f"too little skin ({share:.1%} of the view)")
    if gains.max() / gains.min() > MAX_GAIN_RATIO:
        return ToneEstimate(ita, None, False, f"colour cast too strong to correct "
                                              f"(channel gains differ {gains.max() / gains.min():.1f}x)")
    if b < MIN_B:
        return ToneEstimate(ita, None, False, f"skin b* {b:.1f} < {MIN_B}: too near neutral for an angle")
    return ToneEstimate(ita, tone_band(ita), True, None)


def skin_ita(bgr: np.ndarray, mask: np.ndarray | None = None, fov: np.ndarray | None = None) -> float | None:
    """The ITA of estimate_tone, reliable or not (None with no skin)."""
    return estimate_tone(bgr, mask, fov).ita


def resolve_tone(fitzpatrick: str | None, estimate: ToneEstimate | None) -> tuple[str, str, str]:
    """(band, source, reason) for a manifest row: the metadata's Fitzpatrick type wins over the ITA (a
    clinician's reading, not a lighting-dependent one); an unreliable ITA gives band "" with its reason."""
    if fitzpatrick in FITZPATRICK_BAND:
        return FITZPATRICK_BAND[fitzpatrick], "metadata", ""
    if estimate is None:
        return "", "", ""
    if not estimate.reliable:
        return "", "ita", estimate.reason or ""
    return estimate.band or "", "ita", ""
