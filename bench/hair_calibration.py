"""Evidence for the hair detector's calibration (orchestrator/vision/hair.py): does the decision survive a
change of resolution?

Each of the 40 CC0 demo images is scored as stored (1022x767 or 1504x1129), 2x upscaled (INTER_CUBIC),
0.5x downscaled (INTER_AREA) and upscaled to a 6000 px long side (ISIC 2020's most common size), each
re-encoded as JPEG q95 and decoded the way the image stage does (reduced JPEG decode). Printed:
  1. per image: our score (long sides of edge) at each size and decision; the seed's raw score
     (px, at the file's own size) and its decision at each size;
  2. per reference size (the long side at which the seed's 100 px / 4000 px are taken to hold):
     how many decisions flip between native and each other size, and how many images are hairy.

Run: .venv/bin/python bench/hair_calibration.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.dataset.images import decode_reduced  # noqa: E402
from orchestrator.common.paths import DEMO_DIR  # noqa: E402
from orchestrator.vision.hair import (HAIR_THRESHOLD, MIN_CONTOUR, REFERENCE_SIZE, WORKING_SIZE,  # noqa: E402
                                      contour_lengths)

SIZES = ("native", "x2", "x0.5", "6000px")
REFERENCES = (384, 512, 640, 768, 1024, 1536, 2048)


def variants(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    out = {"native": data}
    for name, scale in (("x2", 2.0), ("x0.5", 0.5), ("6000px", 6000 / max(image.shape[:2]))):
        resized = cv2.resize(image, None, fx=scale, fy=scale,
                             interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        out[name] = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return out


def seed_score(bgr: np.ndarray) -> float:
    """The seed's total perimeter in px at the image's own size."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    contours, _ = cv2.findContours(cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 250),
                                   cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return float(sum(length for length in (cv2.arcLength(c, False) for c in contours) if length >= 100))


def main() -> None:
    paths = sorted((DEMO_DIR / "images").glob("*.jpg"))
    lengths: dict[str, list[np.ndarray]] = {s: [] for s in SIZES}
    seed: dict[str, list[float]] = {s: [] for s in SIZES}
    print(f"working size {WORKING_SIZE}, reference {REFERENCE_SIZE}: threshold {HAIR_THRESHOLD:.3f} long sides, "
          f"min contour {MIN_CONTOUR:.3f}")
    print(f"{'image':14} " + " ".join(f"{s:>8}" for s in SIZES) + "  ours  | seed px " +
          " ".join(f"{s:>7}" for s in SIZES) + "  seed")
    for path in paths:
        for size, data in variants(path).items():
            lengths[size].append(contour_lengths(decode_reduced(data, WORKING_SIZE)))
            seed[size].append(seed_score(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)))
        ours = [float(lengths[s][-1][lengths[s][-1] >= MIN_CONTOUR].sum()) for s in SIZES]
        theirs = [seed[s][-1] for s in SIZES]
        print(f"{path.stem:14} " + " ".join(f"{v:8.2f}" for v in ours) + "  " +
              "".join("H" if v > HAIR_THRESHOLD else "." for v in ours) + "  | " +
              " ".join(f"{v:7.0f}" for v in theirs) + "  " + "".join("H" if v > 4000 else "." for v in theirs))

    seed_hairy = {s: np.array(seed[s]) > 4000 for s in SIZES}
    print("\nseed at the file's own size: hairy", {s: int(seed_hairy[s].sum()) for s in SIZES},
          "flips vs native", {s: int((seed_hairy[s] != seed_hairy["native"]).sum()) for s in SIZES[1:]})
    print(f"\n{'reference':>9} {'threshold':>9} {'hairy@native':>12}  flips vs native: " +
          " ".join(f"{s:>7}" for s in SIZES[1:]) + "  closest score/threshold")
    for reference in REFERENCES:
        threshold, min_length = 4000 / reference, 100 / reference
        scores = {s: np.array([ls[ls >= min_length].sum() for ls in lengths[s]]) for s in SIZES}
        hairy = {s: scores[s] > threshold for s in SIZES}
        ratios = np.concatenate([scores[s] for s in SIZES]) / threshold
        nearest = ratios[np.argmin(np.abs(np.log(np.maximum(ratios, 1e-9))))]
        print(f"{reference:9d} {threshold:9.2f} {int(hairy['native'].sum()):12d}                  " +
              " ".join(f"{int((hairy[s] != hairy['native']).sum()):7d}" for s in SIZES[1:]) +
              f"  {nearest:.2f}" + ("   <- in use" if reference == REFERENCE_SIZE else ""))


if __name__ == "__main__":
    main()
