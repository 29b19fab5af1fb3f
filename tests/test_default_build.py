"""The README's main job as a new user runs it: `medsynth dataset build` of the demo set from a project file,
the default worker count, no cache — several times in a row, so an intermittent hang in the image stage
shows up as a failure (each run has its own timeout) rather than a lucky pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.common.paths import DEMO_DIR

PROJECT = """[dataset]
csv = ["{demo}/metadata.csv"]
images = ["{demo}/images"]
out = "melanoma"
"""


def build(cwd: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "dataset", "build", "--quiet", *extra],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "medsynth.toml").write_text(PROJECT.format(demo=DEMO_DIR.as_posix()), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("attempt", range(3))
def test_demo_build_with_default_workers_finishes_with_fresh_image_work(project, attempt):
    (project / ".medsynth-image-cache.json").unlink(missing_ok=True)
    done = build(project)
    assert done.returncode == 0, done.stderr
    assert "wrote 20 images" in done.stdout and "0 reused" in done.stdout
    assert len(list((project / "melanoma" / "train" / "1_melanoma").glob("*.jpg"))) == 20


def test_ctrl_c_ends_a_build_within_two_seconds_and_leaves_no_partial_folder(project, tmp_path):
    images = tmp_path / "many"
    images.mkdir()
    lines = (DEMO_DIR / "metadata.csv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    # 10 copies of each demo image under new ids (200 melanomas): long enough an image stage to interrupt
    names = [row.split(",")[0] for row in rows]
    out_rows = []
    for copy in range(10):
        for name, row in zip(names, rows):
            new = f"{name}{copy:02d}"
            os.link(DEMO_DIR / "images" / f"{name}.jpg", images / f"{new}.jpg")
            out_rows.append(row.replace(name, new, 1))
    csv = tmp_path / "many.csv"
    csv.write_text("\n".join([header, *out_rows]) + "\n", encoding="utf-8")
    child = subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "dataset", "build", "--csv", str(csv),
                              "--images", str(images), "--out", str(tmp_path / "big"), "--quiet"],
                             cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    building = tmp_path / ".big.building"
    deadline = time.monotonic() + 30
    while not any(building.rglob("*.jpg")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert child.poll() is None, "the build ended before it could be interrupted"
    child.send_signal(signal.SIGINT)
    started = time.monotonic()
    try:
        _, err = child.communicate(timeout=10)
    finally:
        child.kill()
    assert time.monotonic() - started < 2.0
    assert child.returncode != 0 and not building.exists()
    assert len(err.strip().splitlines()) == 1, err
