"""The review page in a real headless Chromium: every image loads (the page's own check, read back with
--dump-dom) and a screenshot is taken. Skips when Debian's `chromium` is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from orchestrator.review.grid import review_run, review_sweep
from orchestrator.review.write import write_run_review, write_sweep_review
from review_helpers import colour, make_run, sample_name, write_events, write_sample
from train_helpers import make_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")


def chromium(page: Path, profile: Path, *args: str) -> str:
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args,
            page.resolve().as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def image_check(page: Path, profile: Path) -> tuple[int, int]:
    """(images on the page, images that did not load) as the page's load-time script recorded them."""
    dom = chromium(page, profile, "--dump-dom")
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    found = dict(re.findall(r'data-(images|broken)="(\d+)"', body.group(0)))
    assert set(found) == {"images", "broken"}, f"the page's image check did not run: {body.group(0)}"
    return int(found["images"]), int(found["broken"])


@pytest.fixture
def run(tmp_path):
    run_dir = make_run(tmp_path, make_dataset(tmp_path / "ds"), epochs=3, sets=["num_sample_prompts=2"])
    for epoch in (1, 2):
        for index in (0, 1):
            write_sample(run_dir, sample_name(epoch=epoch, index=index, ts=f"202611260{epoch}0{index}00",
                                              seed=1000 + index), colour(epoch, index), size=256)
    write_events(run_dir / "logs" / "20261126000000" / "network_train",
                 {"loss/current": [(s, 1.0 + 1.0 / s) for s in range(1, 19)],
                  "loss/average": [(s, 1.5 - 0.01 * s) for s in range(1, 19)],
                  "loss/epoch_average": [(1, 1.4), (2, 1.3)], "lr/unet": [(s, 1e-6 * s) for s in range(1, 19)]})
    return run_dir


def test_every_image_of_a_run_review_loads_and_the_page_is_screenshotted(run, tmp_path):
    review = review_run(run)
    written = write_run_review(review, run, columns=review.columns)
    images, broken = image_check(written.html, tmp_path / "profile")
    assert (images, broken) == (5 + 4 + 2, 0)  # 5 training images, 4 samples, 2 curve plots
    shot = tmp_path / "review.png"
    chromium(written.html, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1400,1400")
    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[:2] == (1400, 1400)
    assert picture.std() > 20  # not a blank page


def test_a_missing_image_is_reported_broken_by_the_page(run, tmp_path):
    review = review_run(run)
    written = write_run_review(review, run, columns=review.columns)
    next((run / "review_files" / "thumbs").glob("melanoma_lora_e000001_00_*.jpg")).unlink()
    images, broken = image_check(written.html, tmp_path / "profile")
    assert (images, broken) == (11, 1)
    dom = chromium(written.html, tmp_path / "profile2", "--dump-dom")
    assert "1 of 11 images could not be loaded" in dom


def test_every_image_of_a_sweep_review_loads(run, tmp_path):
    other = make_run(tmp_path, make_dataset(tmp_path / "ds2"), name="r2", epochs=3, sets=["num_sample_prompts=2"])
    write_sample(other, sample_name(epoch=1, index=0, ts="20261126010000", seed=1000), colour(9, 0), size=256)
    review = review_sweep(run.parent)
    written = write_sweep_review(review, run.parent)
    images, broken = image_check(written.html, tmp_path / "profile")
    assert (images, broken) == (3 + 2 + 3 + 2, 0)  # training images of rows 0/1, 3 samples at epoch 1, 2 curves
    chromium(written.html, tmp_path / "profile2", f"--screenshot={tmp_path / 'sweep.png'}", "--window-size=1400,900")
    assert cv2.imread(str(tmp_path / "sweep.png")) is not None
