"""Lesion mask and ABCD features: drawn shapes with known answers, then the 40 real CC0 demo images."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from orchestrator.common.paths import DEMO_DIR
from orchestrator.vision.lesion import (ANALYSIS_SIZE, COLOUR_CENTRES_RGB, LesionFeatures, d_proxy, field_of_view,
                                        lesion_features, tds)

SKIN = (170, 190, 230)  # BGR: a light skin


def canvas(size: int = ANALYSIS_SIZE) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = SKIN
    return image


def colour(name: str) -> tuple[int, int, int]:
    """A dermoscopic colour centre as an OpenCV BGR drawing colour."""
    r, g, b = COLOUR_CENTRES_RGB[name]
    return round(b * 255), round(g * 255), round(r * 255)


def measured(image: np.ndarray) -> LesionFeatures:
    features, mask = lesion_features(image)
    assert features is not None and mask.any()
    return features


def star(cx: int, cy: int, outer: float, inner: float, points: int = 5) -> np.ndarray:
    corners = [(cx + (outer if i % 2 == 0 else inner) * math.cos(math.pi * i / points),
                cy + (outer if i % 2 == 0 else inner) * math.sin(math.pi * i / points)) for i in range(2 * points)]
    return np.array(corners, np.int32)


# ---- asymmetry ----

def test_circle_is_symmetric_about_both_axes():
    image = canvas()
    cv2.circle(image, (256, 256), 100, colour("dark brown"), -1)
    f = measured(image)
    assert f.asymmetry == 0
    assert f.asymmetry_index < 0.02


def test_half_moon_is_asymmetric_about_one_axis_only():
    image = canvas()
    cv2.ellipse(image, (256, 300), (120, 120), 0, 180, 360, colour("dark brown"), -1)  # the upper half-disc
    f = measured(image)
    assert f.asymmetry == 1
    assert f.asymmetry_index > 0.1


def test_l_shape_is_asymmetric_about_both_axes():
    image = canvas()
    corners = np.array([[100, 100], [400, 100], [400, 180], [180, 180], [180, 420], [100, 420]], np.int32)
    cv2.fillPoly(image, [corners], colour("dark brown"))
    assert measured(image).asymmetry == 2


def test_asymmetry_does_not_depend_on_rotation():
    image = canvas()
    cv2.ellipse(image, (256, 256), (160, 70), 35, 0, 360, colour("dark brown"), -1)
    f = measured(image)
    assert f.asymmetry == 0 and f.asymmetry_index < 0.03


# ---- border ----

def test_circle_border_is_regular_and_star_border_irregular_in_every_sector():
    circle, starred = canvas(), canvas()
    cv2.circle(circle, (256, 256), 120, colour("dark brown"), -1)
    cv2.fillPoly(starred, [star(256, 256, 150, 60)], colour("dark brown"))
    round_one, spiky = measured(circle), measured(starred)
    assert round_one.border == 0
    assert spiky.border == 8
    assert round_one.compactness == pytest.approx(1.0, abs=0.05)
    assert spiky.compactness > 2


def test_convex_ellipse_has_a_regular_border():
    image = canvas()
    cv2.ellipse(image, (256, 256), (180, 70), 20, 0, 360, colour("dark brown"), -1)
    assert measured(image).border == 0


# ---- colours ----

def test_one_painted_colour_counts_once():
    image = canvas()
    cv2.circle(image, (256, 256), 120, colour("dark brown"), -1)
    f = measured(image)
    assert (f.colours, f.colour_names) == (1, ("dark brown",))


def test_three_painted_colours_count_three():
    image = canvas()
    cv2.circle(image, (256, 256), 140, colour("dark brown"), -1)
    cv2.circle(image, (256, 256), 95, colour("black"), -1)
    cv2.circle(image, (256, 256), 50, colour("blue-gray"), -1)
    f = measured(image)
    assert f.colours == 3
    assert set(f.colour_names) == {"dark brown", "black", "blue-gray"}


def test_a_colour_below_five_percent_of_the_lesion_is_not_counted():
    image = canvas()
    cv2.circle(image, (256, 256), 140, colour("dark brown"), -1)
    cv2.circle(image, (256, 256), 20, colour("black"), -1)  # 2 % of the lesion's area
    assert measured(image).colour_names == ("dark brown",)


# ---- diameter ----

@pytest.mark.parametrize("size,radius", [(512, 100), (1024, 180), (2048, 300)])
def test_diameter_of_a_disc_is_twice_its_radius_in_the_images_own_pixels(size, radius):
    image = canvas(size)
    cv2.circle(image, (size // 2, size // 2), radius, colour("dark brown"), -1)
    f = measured(image)
    assert f.diameter_px == pytest.approx(2 * radius + 1, rel=0.02)
    assert f.diameter_rel == pytest.approx((2 * radius + 1) / size, rel=0.02)


def test_diameter_of_an_ellipse_is_its_major_axis():
    image = canvas()
    cv2.ellipse(image, (256, 256), (200, 60), 30, 0, 360, colour("dark brown"), -1)
    assert measured(image).diameter_px == pytest.approx(401, rel=0.02)


# ---- TDS ----

def test_tds_is_stolz_formula_over_its_range():
    assert tds(0, 0, 1, 1) == 1.0
    assert tds(2, 8, 6, 5) == 8.9
    assert tds(1, 3, 2, 3) == pytest.approx(1.3 + 0.3 + 1.0 + 1.5)


def test_d_proxy_grows_with_relative_diameter_from_1_to_5():
    assert [d_proxy(r) for r in (0.0, 0.19, 0.2, 0.45, 0.6, 0.8, 1.0, 1.4)] == [1, 1, 2, 3, 4, 5, 5, 5]


def test_features_tds_is_the_formula_of_its_own_scores():
    image = canvas()
    cv2.fillPoly(image, [star(256, 256, 150, 60)], colour("dark brown"))
    f = measured(image)
    assert f.tds == tds(f.asymmetry, f.border, f.colours, f.d_proxy)


# ---- mask ----

def test_plain_skin_has_no_lesion():
    features, mask = lesion_features(canvas())
    assert features is None and not mask.any()


def test_dark_vignette_is_outside_the_field_of_view_and_not_the_lesion():
    image = canvas()
    ring = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(ring, (256, 256), 230, 1, -1)
    image[ring == 0] = (5, 5, 5)  # the dermatoscope's black corners, darker than the lesion
    cv2.circle(image, (256, 256), 60, colour("dark brown"), -1)
    fov = field_of_view(image)
    assert not fov[0, 0] and not fov[-1, -1] and fov[256, 256]
    f = measured(image)
    assert f.diameter_px == pytest.approx(121, rel=0.03)


def test_lesion_touching_a_plain_photo_edge_is_still_found():
    image = canvas()
    cv2.circle(image, (60, 256), 120, colour("dark brown"), -1)
    assert measured(image).area_fraction > 0.1


# ---- the real CC0 demo images ----

DEMO_IMAGES = sorted((DEMO_DIR / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def demo_features() -> dict[str, tuple[LesionFeatures | None, np.ndarray]]:
    return {p.stem: lesion_features(cv2.imread(str(p))) for p in DEMO_IMAGES}


def test_every_demo_image_has_a_non_empty_mask_and_scores_in_range(demo_features):
    assert len(demo_features) == 40
    for name, (f, mask) in demo_features.items():
        assert f is not None and mask.sum() > 0.01 * mask.size, name
        assert 0 <= f.asymmetry <= 2 and 0 <= f.border <= 8 and 1 <= f.colours <= 6 and 1 <= f.d_proxy <= 5, name
        assert 1.0 <= f.tds <= 8.9, name
        assert 0 < f.diameter_rel <= math.sqrt(2) and 0 < f.area_fraction <= 1, name
        assert f.compactness >= 0.9 and 0 <= f.asymmetry_index <= 2, name


def test_demo_features_are_deterministic(demo_features):
    for path in DEMO_IMAGES[::7]:
        again, mask = lesion_features(cv2.imread(str(path)))
        first, first_mask = demo_features[path.stem]
        assert again == first
        assert np.array_equal(mask, first_mask)


def test_features_and_ita_do_not_depend_on_opencv_thread_count():
    # evaluate's worker processes run OpenCV single-threaded, the in-process path with all threads:
    # both must give the same numbers, or evaluation.json would depend on --workers
    from orchestrator.vision.skin_tone import skin_ita

    images = [cv2.imread(str(p)) for p in DEMO_IMAGES[::4]]
    threads = cv2.getNumThreads()
    try:
        results = []
        for count in (1, 4):
            cv2.setNumThreads(count)
            results.append([(lesion_features(i)[0], skin_ita(i)) for i in images])
    finally:
        cv2.setNumThreads(threads)
    assert results[0] == results[1]
