"""Lesion mask and ABCD-style features of one dermoscopy image (OpenCV/numpy, CPU). Pure functions.

Every image is analysed at ANALYSIS_SIZE on its long side (INTER_AREA), so thresholds and kernel sizes mean
the same thing for a 1022 px archive photo and a 1024 px synthetic one; the diameter is given back in the
image's own pixels and as a fraction of its long side.

Mask: the field of view is the image minus the dermatoscope's dark vignette (pixels darker than half the
median of the central region, connected to an image corner), eroded by FOV_MARGIN of the long side to drop
its soft rim. The lesion is darker than skin in the blue channel, after a shades-of-gray (p = 6) white
balance that removes the blue or yellow casts of different dermatoscopes; Otsu's threshold over the field
of view separates the two, an opening and a closing clean it, holes are filled, and the component with the
largest area x centrality (1 - distance from the centre / half diagonal) is the lesion.

Features (after the dermoscopic ABCD rule of Stolz et al., measured automatically):
  A  asymmetry 0-2: the mask is mirrored about each of its two principal axes (through the centroid); an
     axis counts when the mirrored mask differs from the mask on more than ASYMMETRY_THRESHOLD of its area.
     asymmetry_index is the mean of the two mismatch fractions (0 = symmetric), a continuous version.
  B  border 0-8: the border is cut into 8 sectors of 45 degrees around the centroid; a sector counts as
     irregular when the (lightly smoothed) outline there lies inside the convex hull by more than
     BORDER_THRESHOLD of the hull's radius, on average. This is a shape proxy for Stolz's "abrupt
     cut-off of pigment" per sector; compactness = perimeter^2 / (4 pi area) (1 for a disc) is given too.
  C  colours 1-6: each lesion pixel of the white-balanced image takes the nearest (CIE Lab, Delta E 1976)
     of the six dermoscopic colour centres in COLOUR_CENTRES_RGB; a colour is present when it holds at least
     COLOUR_MIN_FRACTION of the lesion (the most frequent one counts when none does).
  D  diameter: the largest distance between two border points (max Feret diameter), in pixels.
  TDS = 1.3 A + 0.1 B + 0.5 C + 0.5 D'.  In the true TDS, D is the number of differential structures
     (network, structureless areas, dots, globules, streaks; 1-5); there is no structure detector here, so
     D' is a DIAMETER PROXY: 1 + floor(5 x diameter / long side), clipped to 1-5. The TDS is therefore an
     automated estimate for comparing image sets, NOT a diagnosis.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from orchestrator.vision import resized_long_side

ANALYSIS_SIZE = 512            # long side, px, at which masks and features are computed
FOV_MARGIN = 0.03              # of the long side: the vignette's soft rim dropped from the field of view
MORPH_KERNEL = 0.02            # of the long side: opening/closing kernel of the mask
ASYMMETRY_THRESHOLD = 0.20     # mismatch fraction above which an axis counts as asymmetric
BORDER_THRESHOLD = 0.05        # mean depth of the outline inside the hull, / hull radius: irregular sector
COLOUR_MIN_FRACTION = 0.05     # share of the lesion's pixels for a colour to count as present

# The six dermoscopic colours, as the RGB centres used in automated ABCD work (Kasmi & Mokrani 2016,
# IET Image Processing 10(6)); converted to CIE Lab (D65) below, which gives (L*, a*, b*):
# white (100, 0, 0), red (46.2, 59.0, 37.1), light brown (47.2, 13.7, 54.7), dark brown (6.4, 24.9, 10.0),
# blue-gray (57.8, -28.4, -8.6), black (0, 0, 0).
COLOUR_CENTRES_RGB: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "red": (0.8, 0.2, 0.2),
    "light brown": (0.6, 0.4, 0.0),
    "dark brown": (0.2, 0.0, 0.0),
    "blue-gray": (0.2, 0.6, 0.6),
    "black": (0.0, 0.0, 0.0),
}


def _rgb_to_lab(rgb: tuple[float, float, float]) -> np.ndarray:
    pixel = np.array([[rgb[::-1]]], dtype=np.float32)  # one BGR pixel in [0, 1]
    return cv2.cvtColor(pixel, cv2.COLOR_BGR2Lab)[0, 0].astype(np.float64)


@functools.cache
def colour_centres() -> dict[str, np.ndarray]:
    """The centres in Lab, computed on first use: no OpenCV work may run at import (a process that forks
    must not have started OpenCV's threads)."""
    return {name: _rgb_to_lab(rgb) for name, rgb in COLOUR_CENTRES_RGB.items()}


@dataclass(frozen=True)
class LesionFeatures:
    area_fraction: float           # lesion area / field-of-view area
    asymmetry: int                 # A, 0-2
    asymmetry_index: float         # mean mirrored mismatch about the two axes, 0 = symmetric
    border: int                    # B, 0-8 irregular sectors
    compactness: float             # perimeter^2 / (4 pi area), 1 = disc
    colours: int                   # C, 1-6
    colour_names: tuple[str, ...]  # the colours present, in COLOUR_CENTRES_RGB order
    diameter_px: float             # max Feret diameter in the image's own pixels
    diameter_rel: float            # the same / the image's long side
    d_proxy: int                   # D', 1-5, from the diameter (see the module doc)
    tds: float                     # 1.3 A + 0.1 B + 0.5 C + 0.5 D'

    def as_dict(self) -> dict:
        values = asdict(self)
        values["colour_names"] = list(self.colour_names)
        return values


def analysis_image(bgr: np.ndarray) -> np.ndarray:
    """bgr resized so its long side is ANALYSIS_SIZE (INTER_AREA down, INTER_LINEAR up)."""
    return resized_long_side(bgr, ANALYSIS_SIZE)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def field_of_view(bgr: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels inside the dermatoscope's field of view (see the module doc)."""
    gray = cv2.GaussianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (0, 0), 3)
    h, w = gray.shape
    centre = float(np.median(gray[h // 4:max(h // 4 + 1, 3 * h // 4), w // 4:max(w // 4 + 1, 3 * w // 4)]))
    dark = (gray < 0.5 * centre).astype(np.uint8)
    _, labels = cv2.connectedComponents(dark, connectivity=8)
    # a vignette fills the corners; a dark lesion reaching the middle of an edge is no vignette
    corner_labels = np.unique([labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]])
    vignette = np.isin(labels, corner_labels[corner_labels != 0])
    # erode by the margin: distance to the nearest vignette pixel (the image edge is no vignette, so a
    # plain photo keeps its borders); 5x5 chamfer, as OpenCV's exact transform differs with its thread count
    distance = cv2.distanceTransform((~vignette).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    return distance > max(1, round(FOV_MARGIN * max(h, w)))


def white_balance(bgr: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """float32 BGR (0-255) after a shades-of-gray (Minkowski p = 6) white balance over the field of view:
    removes the blue or yellow cast a dermatoscope's light gives the whole picture."""
    x = bgr.astype(np.float32)
    inside = x[fov] / 255
    squared = inside * inside
    illuminant = 255 * np.mean(squared * squared * squared, axis=0) ** (1 / 6)
    return np.clip(x * (illuminant.mean() / np.maximum(illuminant, 1e-3)), 0, 255)


def lesion_mask(bgr: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """Boolean lesion mask of an image (any size; computed as given, callers pass analysis_image output).
    All False when nothing darker than the skin stands out."""
    fov = field_of_view(bgr) if fov is None else fov
    if fov.sum() < 16:
        return np.zeros(fov.shape, bool)
    blue = cv2.GaussianBlur(white_balance(bgr, fov)[..., 0], (0, 0), 2)
    values = np.round(blue[fov]).astype(np.uint8).reshape(-1, 1)
    if int(values.max()) - int(values.min()) < 8:  # flat: no lesion to separate
        return np.zeros(fov.shape, bool)
    threshold, _ = cv2.threshold(values, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = ((blue < threshold) & fov).astype(np.uint8)
    kernel = _disc(max(1, round(MORPH_KERNEL * max(mask.shape) / 2)))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    h, w = mask.shape
    distance = np.hypot(centroids[1:, 0] - w / 2, centroids[1:, 1] - h / 2) / math.hypot(w / 2, h / 2)
    score = stats[1:, cv2.CC_STAT_AREA] * np.clip(1 - distance, 0.05, 1)
    return _fill_holes(labels == 1 + int(np.argmax(score)))


def widened(mask: np.ndarray, margin: float) -> np.ndarray:
    """The boolean mask grown by `margin` of its long side (a disc), so a loss mask keeps the lesion's rim and
    survives sd-scripts' 1/8 downscale to the latents."""
    radius = round(margin * max(mask.shape))
    if radius < 1:
        return mask.astype(bool)
    return cv2.dilate(mask.astype(np.uint8), _disc(radius)).astype(bool)


def lesion_region(bgr: np.ndarray, margin: float) -> np.ndarray:
    """Boolean mask, at bgr's own size, of the lesion (lesion_mask at ANALYSIS_SIZE) widened by `margin` of the
    long side and kept inside the field of view (the vignette is no skin); all False when no lesion is found."""
    small = analysis_image(bgr)
    fov = field_of_view(small)
    lesion = lesion_mask(small, fov)
    if lesion.sum() < 16:  # as lesion_features: a few pixels are no lesion
        return np.zeros(bgr.shape[:2], bool)
    region = (widened(lesion, margin) & fov).astype(np.float32)
    h, w = bgr.shape[:2]
    return cv2.resize(region, (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def principal_axes(mask: np.ndarray) -> tuple[float, float, float]:
    """(cx, cy, angle in radians of the major axis) of the mask's pixels."""
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    angle = 0.5 * math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"])
    return cx, cy, angle


def asymmetry_mismatch(mask: np.ndarray) -> tuple[float, float]:
    """Fraction of the area that differs when the mask is mirrored about its major, then its minor axis."""
    cx, cy, angle = principal_axes(mask)
    ys, xs = np.nonzero(mask)
    radius = math.ceil(float(np.hypot(xs - cx, ys - cy).max()))
    size = 2 * radius + 3
    c = (size - 1) / 2
    # rotate the major axis onto the x axis and the centroid onto the centre pixel of an odd-sized canvas,
    # so flipping the canvas mirrors about the axes exactly
    rot = cv2.getRotationMatrix2D((cx, cy), math.degrees(angle), 1.0)
    rot[:, 2] += (c - cx, c - cy)
    aligned = cv2.warpAffine(mask.astype(np.float32), rot, (size, size), flags=cv2.INTER_LINEAR) >= 0.5
    area = max(int(aligned.sum()), 1)
    about_major = np.logical_xor(aligned, aligned[::-1, :]).sum() / area
    about_minor = np.logical_xor(aligned, aligned[:, ::-1]).sum() / area
    return float(about_major), float(about_minor)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The largest external contour as float (n, 2) points, smoothed along its length (sigma ~ 1 % of the
    perimeter) so pixel staircases do not count as irregularity."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    sigma = max(1.0, 0.01 * len(points))
    radius = int(3 * sigma)
    if len(points) <= 2 * radius + 1:
        return points
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    wrapped = np.concatenate([points[-radius:], points, points[:radius]])
    return np.stack([np.convolve(wrapped[:, i], kernel, mode="valid") for i in (0, 1)], axis=1)


def _densify(points: np.ndarray) -> np.ndarray:
    """A closed polyline resampled so no two consecutive points are more than ~1 px apart."""
    nxt = np.roll(points, -1, axis=0)
    pieces = np.maximum(1, np.ceil(np.hypot(*(nxt - points).T)).astype(int))
    t = np.concatenate([np.arange(k) / k for k in pieces])
    start, end = np.repeat(points, pieces, axis=0), np.repeat(nxt, pieces, axis=0)
    return start + (end - start) * t[:, None]


def _radial_profile(points: np.ndarray, cx: float, cy: float, reduce: np.ufunc) -> np.ndarray:
    """Per degree of angle around (cx, cy): the min or max (`reduce`) radius of the points there; NaN where
    no point falls."""
    dense = _densify(points)
    angle = (np.floor(np.degrees(np.arctan2(dense[:, 1] - cy, dense[:, 0] - cx))).astype(int)) % 360
    radius = np.hypot(dense[:, 0] - cx, dense[:, 1] - cy)
    profile = np.full(360, np.inf if reduce is np.minimum else -np.inf)
    reduce.at(profile, angle, radius)
    profile[~np.isfinite(profile)] = np.nan
    return profile


def border_sectors(mask: np.ndarray) -> tuple[int, float]:
    """(number of irregular sectors 0-8, compactness) of the mask's outline.

    Per degree around the centroid, the border's concavity is how far the outline lies inside the convex
    hull, relative to the hull's radius; a 45-degree sector is irregular when its mean concavity exceeds
    BORDER_THRESHOLD. A convex outline (disc, ellipse) scores 0 wherever it sits; a star scores in every
    sector its arms and notches cross."""
    outline = _outline(mask)
    cx, cy, _ = principal_axes(mask)
    hull = cv2.convexHull(outline.astype(np.float32))[:, 0, :].astype(np.float64)
    inner = _radial_profile(outline, cx, cy, np.minimum)
    outer = _radial_profile(hull, cx, cy, np.maximum)
    concavity = np.clip((outer - inner) / np.maximum(outer, 1e-9), 0, 1)
    per_sector = [np.nanmean(s) if np.isfinite(s).any() else 0.0 for s in concavity.reshape(8, 45)]
    irregular = int(np.sum(np.array(per_sector) > BORDER_THRESHOLD))
    perimeter = float(np.hypot(*(np.roll(outline, -1, axis=0) - outline).T).sum())
    return irregular, perimeter ** 2 / (4 * math.pi * float(mask.sum()))


def colours_present(balanced: np.ndarray, mask: np.ndarray) -> tuple[str, ...]:
    """The dermoscopic colours holding at least COLOUR_MIN_FRACTION of the lesion's pixels, on a
    white-balanced float32 BGR image (0-255)."""
    lab = cv2.cvtColor(balanced / 255, cv2.COLOR_BGR2Lab)[mask]
    centres = np.stack(list(colour_centres().values())).astype(np.float32)
    nearest = np.argmin(((lab[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
    share = np.bincount(nearest, minlength=len(centres)) / max(len(lab), 1)
    present = tuple(name for name, s in zip(COLOUR_CENTRES_RGB, share) if s >= COLOUR_MIN_FRACTION)
    return present or (list(COLOUR_CENTRES_RGB)[int(np.argmax(share))],)


def max_feret_diameter(mask: np.ndarray) -> float:
    """The largest distance between two points of the mask's convex hull, in pixel-centre units + 1."""
    hull = cv2.convexHull(np.argwhere(mask)[:, ::-1].astype(np.int32))[:, 0, :].astype(np.float64)
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff ** 2).sum(axis=2)).max()) + 1.0  # +1: pixels have extent


def d_proxy(diameter_rel: float) -> int:
    return int(min(5, max(1, 1 + math.floor(5 * diameter_rel))))


def tds(a: int, b: int, c: int, d: int) -> float:
    """Stolz's total dermoscopy score formula."""
    return round(1.3 * a + 0.1 * b + 0.5 * c + 0.5 * d, 4)


def features_from_mask(bgr: np.ndarray, mask: np.ndarray, fov: np.ndarray, scale: float = 1.0) -> LesionFeatures:
    """Features of a non-empty mask on `bgr` (same size); `scale` converts its pixels into the original's."""
    mismatch = asymmetry_mismatch(mask)
    border, compactness = border_sectors(mask)
    names = colours_present(white_balance(bgr, fov), mask)
    diameter = max_feret_diameter(mask)
    rel = diameter / max(mask.shape)
    a = sum(m > ASYMMETRY_THRESHOLD for m in mismatch)
    d = d_proxy(rel)
    return LesionFeatures(
        area_fraction=round(float(mask.sum()) / max(int(fov.sum()), 1), 4),
        asymmetry=a, asymmetry_index=round(float(np.mean(mismatch)), 4),
        border=border, compactness=round(compactness, 4),
        colours=len(names), colour_names=names,
        diameter_px=round(diameter * scale, 2), diameter_rel=round(rel, 4), d_proxy=d,
        tds=tds(a, border, len(names), d))


def lesion_features(bgr: np.ndarray) -> tuple[LesionFeatures | None, np.ndarray]:
    """(features or None when no lesion is found, the mask at analysis size) of a BGR image of any size."""
    small = analysis_image(bgr)
    fov = field_of_view(small)
    mask = lesion_mask(small, fov)
    if mask.sum() < 16:
        return None, mask
    return features_from_mask(small, mask, fov, scale=max(bgr.shape[:2]) / max(small.shape[:2])), mask
