"""Image analyses: pure functions on decoded numpy images (BGR, uint8), no file I/O."""

from __future__ import annotations

import cv2
import numpy as np


def resized_long_side(bgr: np.ndarray, long_side: int) -> np.ndarray:
    """bgr resized so its long side is `long_side` (aspect kept; INTER_AREA down, INTER_LINEAR up)."""
    h, w = bgr.shape[:2]
    scale = long_side / max(h, w)
    if scale == 1:
        return bgr
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
