"""FID and KID: the statistics on known feature sets (numpy only), then the Inception pipeline with
random-initialised weights of the real architecture saved to a file (skipped without torch/torchvision)."""

from __future__ import annotations

import importlib.util
import sys

import cv2
import numpy as np
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.evaluate.fid import (frechet_distance, inception_features, kernel_inception_distance, load_inception,
                              mmd2_unbiased)
from orchestrator.common.paths import DEMO_DIR

HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision"))
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch/torchvision not installed (FID/KID are optional)")


def gaussian(n: int, d: int, seed: int, mean: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, scale, size=(n, d))


# ---- FID ----

def test_fid_of_a_set_with_itself_is_zero():
    x = gaussian(200, 16, 0)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_a_shifted_copy_is_the_squared_shift():
    x = gaussian(200, 16, 1)
    shift = np.linspace(0.1, 1.0, 16)
    assert frechet_distance(x, x + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-6)


def test_fid_between_gaussians_of_different_spread_matches_the_closed_form():
    # N(0, I) vs N(0, 4 I) in d dimensions: Tr(I + 4I - 2 * 2I) = d
    d = 4
    x, y = gaussian(20000, d, 2), gaussian(20000, d, 3, scale=2.0)
    assert frechet_distance(x, y) == pytest.approx(d, rel=0.05)


def test_fid_with_fewer_images_than_dimensions_keeps_the_exact_shift():
    x = gaussian(10, 64, 4)
    shift = np.full(64, 0.5)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + shift) == pytest.approx(64 * 0.25, rel=1e-6)


@pytest.mark.parametrize("n", [20, 40])
def test_fid_is_the_same_number_below_and_above_the_dimension_count(n):
    # n = 20 < d takes the small-matrix route, n = 40 > d the d x d one: both must equal the direct formula
    x, y = gaussian(n, 30, 6), gaussian(n, 30, 7, mean=0.3, scale=1.5)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eig = np.linalg.eigvals(cx @ cy)
    direct = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2 * np.sqrt(eig.real.clip(0)).sum()
    assert frechet_distance(x, y) == pytest.approx(direct, rel=1e-6)


def test_fid_needs_two_images_per_set():
    with pytest.raises(MedsynthError, match="at least 2 images"):
        frechet_distance(gaussian(1, 4, 0), gaussian(5, 4, 1))


# ---- KID ----

def test_kid_is_unbiased_around_zero_for_samples_of_one_distribution():
    values = [mmd2_unbiased(gaussian(50, 8, 10 + i), gaussian(50, 8, 100 + i)) for i in range(200)]
    spread = np.std(values) / np.sqrt(len(values))
    assert abs(np.mean(values)) < 3 * spread
    assert min(values) < 0 < max(values)  # an unbiased estimate of 0 goes both ways


def test_kid_is_positive_for_different_distributions():
    assert mmd2_unbiased(gaussian(50, 8, 1), gaussian(50, 8, 2, mean=1.0)) > 0.1


def test_kid_over_subsets_reports_mean_and_spread():
    x, y = gaussian(120, 8, 1), gaussian(80, 8, 2, mean=0.5)
    mean, std = kernel_inception_distance(x, y, subsets=20, subset_size=40, seed=0)
    assert mean > 0 and std > 0
    assert kernel_inception_distance(x, y, subsets=20, subset_size=40, seed=0) == (mean, std)


def test_kid_with_whole_equal_sets_is_one_exact_estimate():
    x, y = gaussian(30, 8, 1), gaussian(30, 8, 2)
    assert kernel_inception_distance(x, y) == (mmd2_unbiased(x, y), 0.0)


# ---- the Inception pipeline ----

@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """torchvision inception_v3 with random weights, batch norm statistics taken from one batch of noise so
    activations stay finite, saved as a state_dict file."""
    if not HAVE_TORCH:
        pytest.skip("torch/torchvision not installed (FID/KID are optional)")
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one batch sets the running statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 299, 299))
    path = tmp_path_factory.mktemp("inception") / "inception_random.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(random_weights):
    return load_inception(random_weights)


def demo_images(names: list[str]) -> list[np.ndarray]:
    return [cv2.imread(str(DEMO_DIR / "images" / f"{n}.jpg")) for n in names]


@needs_torch
def test_inception_features_give_zero_fid_for_the_same_images_and_positive_for_others(model):
    a = inception_features(model, demo_images(["ISIC_0000000", "ISIC_0000001"]))
    b = inception_features(model, demo_images(["ISIC_0000074", "ISIC_0000076"]))
    assert a.shape == (2, 2048) and np.isfinite(a).all()
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6 * max(1.0, float(np.abs(a).mean())))
    assert frechet_distance(a, b) > 0


@needs_torch
def test_features_do_not_depend_on_batching(model):
    images = demo_images(["ISIC_0000000", "ISIC_0000001"])
    assert np.allclose(inception_features(model, images, batch_size=1), inception_features(model, images),
                       rtol=1e-4, atol=1e-5)


def test_missing_weights_file_is_a_one_line_error(tmp_path):
    with pytest.raises(MedsynthError, match="not found") as info:
        load_inception(tmp_path / "nope.pth")
    assert "\n" not in str(info.value)


@needs_torch
def test_a_file_that_is_no_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MedsynthError, match="not a loadable torch state_dict") as info:
        load_inception(bad)
    assert "\n" not in str(info.value)


@needs_torch
def test_weights_of_another_architecture_are_refused(tmp_path):
    import torch

    other = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(MedsynthError, match="does not fit torchvision's inception_v3") as info:
        load_inception(other)
    assert "\n" not in str(info.value)


def test_without_torch_the_error_says_so(tmp_path, monkeypatch):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)  # what an environment without torch looks like to import
    with pytest.raises(MedsynthError, match="need torch and torchvision"):
        load_inception(weights)


@needs_torch
def test_the_inception_space_screen_finds_a_flipped_copy_as_its_real_images_nearest(model):
    from orchestrator.evaluate.fid import dihedral_features
    from orchestrator.vision.memorization import feature_similarity, screen

    names = ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "ISIC_0000003", "ISIC_0000004", "ISIC_0000006"]
    real = list(zip(names, dihedral_features(model, demo_images(names))))
    copy, other = demo_images(["ISIC_0000003"])[0][::-1], demo_images(["ISIC_0000074"])[0]
    synthetic = list(zip(["copy", "other", "broken"], dihedral_features(model, [copy, other, None])))
    found = screen(real, synthetic, similarity=feature_similarity, method="inception")
    by_name = {m.synthetic: m for m in found.matches}
    assert by_name["copy"].nearest_real == "ISIC_0000003" and by_name["copy"].similarity > 0.9999
    assert by_name["other"].similarity < by_name["copy"].similarity
    assert by_name["broken"].similarity is None and found.as_dict()["method"] == "inception"
    assert found.calibration.real_images == 6 and found.calibration.threshold is not None
