"""Hair detection: drawn hairs vs clean skin, and the same decision whatever the image's resolution."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from orchestrator.dataset.images import decode_reduced
from orchestrator.common.paths import DEMO_DIR
from orchestrator.vision.hair import HAIR_THRESHOLD, WORKING_SIZE, hair_score, is_hairy

DEMO_IMAGES = sorted((DEMO_DIR / "images").glob("*.jpg"))


def skin(width: int = 1500, height: int = 1100, seed: int = 0) -> np.ndarray:
    """Skin-coloured field with mild sensor noise and a soft brown lesion, like a dermoscopy frame."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.float32)
    image[:] = (150, 170, 215)  # BGR
    image += rng.normal(0, 4, image.shape)
    lesion = np.zeros((height, width), np.float32)
    cv2.ellipse(lesion, (width // 2, height // 2), (width // 6, height // 5), 20, 0, 360, 1.0, -1)
    lesion = cv2.GaussianBlur(lesion, (0, 0), width / 60)[..., None]
    image = image * (1 - 0.5 * lesion) + np.array((40, 60, 100), np.float32) * 0.5 * lesion
    return np.clip(image, 0, 255).astype(np.uint8)


def with_hairs(image: np.ndarray, count: int = 40, seed: int = 1) -> np.ndarray:
    """Dark curved strands across the frame, ~0.2% of the long side thick."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    h, w = out.shape[:2]
    thickness = max(2, round(max(h, w) / 500))
    for _ in range(count):
        start = rng.uniform((0, 0), (w, h))
        angle = rng.uniform(0, np.pi)
        bend = rng.uniform(-0.3, 0.3)
        points = [start + t * max(h, w) * 0.5 * np.array((np.cos(angle + bend * t), np.sin(angle + bend * t)))
                  for t in np.linspace(0, 1, 30)]
        cv2.polylines(out, [np.int32(points)], False, (35, 30, 30), thickness, cv2.LINE_AA)
    return out


def rescaled(image: np.ndarray, scale: float) -> np.ndarray:
    """image resized and round-tripped through JPEG q95, as a differently sized copy of the file would be."""
    resized = cv2.resize(image, None, fx=scale, fy=scale,
                         interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    return cv2.imdecode(cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], cv2.IMREAD_COLOR)


def test_drawn_hairs_are_hairy_and_clean_skin_is_not():
    clean = skin()
    assert not is_hairy(hair_score(clean))
    assert is_hairy(hair_score(with_hairs(clean)))


def test_flat_image_scores_zero():
    assert hair_score(np.full((480, 640, 3), 128, np.uint8)) == 0.0


@pytest.mark.parametrize("scale", [0.5, 2.0, 4.0])
def test_synthetic_decisions_survive_rescaling(scale):
    clean, hairy = skin(), with_hairs(skin())
    assert not is_hairy(hair_score(rescaled(clean, scale)))
    assert is_hairy(hair_score(rescaled(hairy, scale)))


def test_hair_score_is_pure():
    image = with_hairs(skin())
    before = image.copy()
    assert hair_score(image) == hair_score(image)
    assert np.array_equal(image, before)


def test_threshold_is_strict():
    assert not is_hairy(HAIR_THRESHOLD)
    assert is_hairy(np.nextafter(HAIR_THRESHOLD, np.inf))


def test_demo_set_has_both_decisions():
    decisions = {is_hairy(hair_score(cv2.imread(str(p)))) for p in DEMO_IMAGES}
    assert len(DEMO_IMAGES) == 40 and decisions == {True, False}


@pytest.mark.parametrize("scale", [2.0, 0.5])
@pytest.mark.parametrize("path", DEMO_IMAGES, ids=[p.stem for p in DEMO_IMAGES])
def test_real_image_gets_same_decision_at_native_and_rescaled_size(path, scale):
    native = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(native, np.uint8), cv2.IMREAD_COLOR)
    other = cv2.imencode(".jpg", cv2.resize(image, None, fx=scale, fy=scale,
                                            interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA),
                         [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    # decoded as the image stage decodes (reduced JPEG decode where the size allows it)
    native_score = hair_score(decode_reduced(native, WORKING_SIZE))
    other_score = hair_score(decode_reduced(other, WORKING_SIZE))
    assert is_hairy(native_score) == is_hairy(other_score), (native_score, other_score)
