"""The image stage: resizing, copies, every kind of bad image, the content-hash cache, the worker threads."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.dataset import images as images_module
from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.images import HAIR_ALGORITHM, ImageJob, ImageResult, output_size, process_images
from orchestrator.common.paths import DEMO_DIR
from orchestrator.vision.hair import hair_score

DEMO = DEMO_DIR / "images"
WIDE = DEMO / "ISIC_0000017.jpg"     # 1504x1129
HAIRY = DEMO / "ISIC_0000043.jpg"    # 1504x1129, covered in hair


def run(jobs: list[ImageJob], cache: Path | None = None, workers: int = 1) -> list[ImageResult]:
    return process_images(jobs, workers=workers, cache_path=cache, progress=False)


def job(src: Path, out: Path, resolution: int | None = 512, reuse: Path | None = None) -> ImageJob:
    out.mkdir(exist_ok=True)
    return ImageJob(src.stem, src, out / f"{src.stem}.jpg", resolution, reuse)


def jpeg(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def test_resize_fits_long_side_and_keeps_aspect(tmp_path):
    [result] = run([job(WIDE, tmp_path / "out")])
    written = cv2.imread(str(tmp_path / "out" / "ISIC_0000017.jpg"))
    assert result.error is None
    assert (result.width, result.height) == (1504, 1129)
    assert (result.out_width, result.out_height) == (512, 384) == (written.shape[1], written.shape[0])


def test_portrait_image_fits_its_height(tmp_path):
    src = jpeg(tmp_path / "portrait.jpg", cv2.rotate(cv2.imread(str(WIDE)), cv2.ROTATE_90_CLOCKWISE))
    [result] = run([job(src, tmp_path / "out")])
    assert (result.out_width, result.out_height) == (384, 512)
    assert cv2.imread(str(tmp_path / "out" / "portrait.jpg")).shape[:2] == (512, 384)


def test_output_size_never_upscales():
    assert output_size(640, 480, 1024) == (640, 480)
    assert output_size(6000, 4000, 1024) == (1024, 683)
    assert output_size(6000, 4000, None) == (6000, 4000)


def test_small_jpeg_is_copied_not_upscaled_or_reencoded(tmp_path):
    [result] = run([job(WIDE, tmp_path / "out", resolution=4096)])
    dst = tmp_path / "out" / "ISIC_0000017.jpg"
    assert (result.out_width, result.out_height) == (1504, 1129)
    assert dst.read_bytes() == WIDE.read_bytes() and not os.path.samefile(WIDE, dst)


def test_editing_a_no_resize_output_in_place_leaves_the_source_alone(tmp_path):
    src = tmp_path / "src" / "ISIC_0000017.jpg"
    src.parent.mkdir()
    src.write_bytes(WIDE.read_bytes())
    [result] = run([job(src, tmp_path / "out", resolution=None)])
    dst = tmp_path / "out" / "ISIC_0000017.jpg"
    with dst.open("r+b") as fh:  # an in-place edit, as an image editor's "save" may do
        fh.write(b"\xff\xd8edited")
    assert result.error is None and (result.out_width, result.out_height) == (1504, 1129)
    assert src.read_bytes() == WIDE.read_bytes() and src.stat().st_nlink == 1


def test_reused_output_that_an_older_build_linked_to_its_source_is_copied(tmp_path):
    src = tmp_path / "src" / "ISIC_0000017.jpg"
    src.parent.mkdir()
    src.write_bytes(WIDE.read_bytes())
    old = tmp_path / "old"
    old.mkdir()
    os.link(src, old / "ISIC_0000017.jpg")  # what medsynth before 0.2 wrote for a fitting JPEG
    run([job(src, tmp_path / "new", resolution=4096, reuse=old / "ISIC_0000017.jpg")])
    assert not os.path.samefile(src, tmp_path / "new" / "ISIC_0000017.jpg")
    assert src.stat().st_nlink == 2  # the source and the old build's link: nothing new


def test_output_bytes_are_deterministic(tmp_path):
    run([job(WIDE, tmp_path / "a")])
    run([job(WIDE, tmp_path / "b")])
    assert (tmp_path / "a" / "ISIC_0000017.jpg").read_bytes() == (tmp_path / "b" / "ISIC_0000017.jpg").read_bytes()


def test_source_is_untouched_and_no_temp_files_remain(tmp_path):
    before = (WIDE.read_bytes(), WIDE.stat().st_mtime_ns)
    run([job(WIDE, tmp_path / "out"), job(HAIRY, tmp_path / "out", resolution=None)])
    assert (WIDE.read_bytes(), WIDE.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ISIC_0000017.jpg", "ISIC_0000043.jpg"]


def test_unwritable_output_stops_with_one_line_error(tmp_path):
    missing_folder = tmp_path / "not-created" / "ISIC_0000017.jpg"
    with pytest.raises(MedsynthError, match="cannot write .*not-created"):
        run([ImageJob("ISIC_0000017", WIDE, missing_folder, 512)])


def test_result_carries_hash_and_hair(tmp_path):
    [result] = run([job(HAIRY, tmp_path / "out")])
    assert result.sha256 == hashlib.sha256(HAIRY.read_bytes()).hexdigest()
    assert result.hairy is True and result.hair_score == pytest.approx(hair_score(cv2.imread(str(HAIRY))), rel=0.05)


def test_large_jpeg_is_decoded_reduced(tmp_path, monkeypatch):
    big = cv2.resize(cv2.imread(str(WIDE)), (4096, 3072), interpolation=cv2.INTER_CUBIC)
    src = jpeg(tmp_path / "big.jpg", big)
    shapes = []
    real = cv2.imdecode
    monkeypatch.setattr(images_module.cv2, "imdecode", lambda *a: shapes.append(real(*a).shape[:2]) or real(*a))
    [result] = run([job(src, tmp_path / "out", resolution=1024)])
    assert shapes == [(768, 1024)]  # 1/4 scale: the largest reduction still >= 1024 px
    assert (result.width, result.height, result.out_width, result.out_height) == (4096, 3072, 1024, 768)


# ---- bad images: each gives a reason, none raises, the good ones around them still succeed ----

def make_bad(kind: str, folder: Path) -> Path:
    good = cv2.imread(str(WIDE))
    path = folder / f"{kind}.jpg"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(5000))
    elif kind == "garbage_after_soi":
        path.write_bytes(b"\xff\xd8" + os.urandom(5000))
    elif kind == "truncated":
        data = WIDE.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_in_header":
        path.write_bytes(WIDE.read_bytes()[:300])
    elif kind == "grayscale":
        jpeg(path, cv2.cvtColor(good, cv2.COLOR_BGR2GRAY))
    elif kind == "cmyk":
        from PIL import Image  # Pillow ships with matplotlib
        Image.new("CMYK", (64, 48), (10, 200, 30, 5)).save(path, "JPEG")
    elif kind == "alpha_png":
        path = path.with_suffix(".png")
        cv2.imwrite(str(path), cv2.cvtColor(good, cv2.COLOR_BGR2BGRA))
    elif kind == "grayscale_png":
        path = path.with_suffix(".png")
        cv2.imwrite(str(path), cv2.cvtColor(good, cv2.COLOR_BGR2GRAY))
    elif kind == "truncated_png":
        path = path.with_suffix(".png")
        cv2.imwrite(str(path), good)
        path.write_bytes(path.read_bytes()[:-100])
    elif kind == "fifo":
        os.mkfifo(path)
    return path


BAD = {
    "missing": "missing", "directory": "not a plain file", "fifo": "not a plain file", "empty": "empty file",
    "garbage": "corrupt", "garbage_after_soi": "corrupt", "truncated": "truncated",
    "truncated_in_header": "truncated", "grayscale": "grayscale", "cmyk": "cmyk",
    "alpha_png": "alpha channel", "grayscale_png": "grayscale", "truncated_png": "truncated",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_image_is_reported_not_raised(tmp_path, kind):
    if kind == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    (tmp_path / "src").mkdir()
    bad = make_bad(kind, tmp_path / "src")
    results = run([job(WIDE, tmp_path / "out"), job(bad, tmp_path / "out"), job(HAIRY, tmp_path / "out")])
    assert [r.image_id for r in results] == ["ISIC_0000017", bad.stem, "ISIC_0000043"]
    assert results[1].error == BAD[kind]
    assert results[1].hairy is None and results[1].out_width is None
    assert not (tmp_path / "out" / f"{bad.stem}.jpg").exists()
    assert results[0].error is None and results[2].error is None


def test_jpeg_with_bytes_after_end_marker_is_accepted(tmp_path):
    src = tmp_path / "trailer.jpg"
    src.write_bytes(WIDE.read_bytes() + b"camera trailer \x00\x01")
    [result] = run([job(src, tmp_path / "out")])
    assert result.error is None and result.out_width == 512


def test_jpeg_whose_trailer_holds_scan_and_end_markers_is_accepted(tmp_path):
    src = tmp_path / "vendor.jpg"
    # vendor data after EOI that happens to hold FF DA (and a later FF D9 is no help to a last-FF-DA search)
    src.write_bytes(WIDE.read_bytes() + b"MAKERNOTE\xff\xda\x00\x08\x01\x02\x03" + bytes(range(256)) * 4)
    [result] = run([job(src, tmp_path / "out")])
    assert result.error is None and result.out_width == 512


def test_progressive_jpeg_is_accepted_and_a_cut_one_is_truncated(tmp_path):
    image = cv2.imread(str(WIDE))
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    data = encoded.tobytes()
    assert ok and data.count(b"\xff\xda") > 1  # several scans
    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) * 2 // 3])  # ends inside a later scan
    results = run([job(whole, tmp_path / "out"), job(cut, tmp_path / "out")])
    assert [r.error for r in results] == [None, "truncated"]


def test_png_source_is_written_as_jpeg(tmp_path):
    src = tmp_path / "rgb.png"
    cv2.imwrite(str(src), cv2.imread(str(WIDE)))
    [result] = run([job(src, tmp_path / "out")])
    written = (tmp_path / "out" / "rgb.jpg").read_bytes()
    assert result.error is None and written.startswith(b"\xff\xd8") and result.out_width == 512


# ---- cache ----

def test_warm_cache_with_reuse_does_no_decode(tmp_path, monkeypatch):
    cache = tmp_path / "hair-cache.json"
    first = run([job(WIDE, tmp_path / "a"), job(HAIRY, tmp_path / "a")], cache)
    assert set(json.loads(cache.read_text())["images"]) == {r.sha256 for r in first}

    def refuse(*_):
        raise AssertionError("decoded or analysed although cached")
    monkeypatch.setattr(images_module.cv2, "imdecode", refuse)
    monkeypatch.setattr(images_module, "hair_score", refuse)
    mtime = cache.stat().st_mtime_ns
    second = run([job(WIDE, tmp_path / "b", reuse=tmp_path / "a" / "ISIC_0000017.jpg"),
                  job(HAIRY, tmp_path / "b", reuse=tmp_path / "a" / "ISIC_0000043.jpg")], cache)
    assert second == first
    assert os.path.samefile(tmp_path / "a" / "ISIC_0000043.jpg", tmp_path / "b" / "ISIC_0000043.jpg")
    assert cache.stat().st_mtime_ns == mtime  # nothing new: not rewritten


def test_warm_cache_without_reuse_resizes_but_skips_hair(tmp_path, monkeypatch):
    cache = tmp_path / "hair-cache.json"
    [first] = run([job(HAIRY, tmp_path / "a")], cache)

    def refuse(*_):
        raise AssertionError("hair analysed although cached")
    monkeypatch.setattr(images_module, "hair_score", refuse)
    [second] = run([job(HAIRY, tmp_path / "b")], cache)
    assert second == first
    assert (tmp_path / "b" / "ISIC_0000043.jpg").read_bytes() == (tmp_path / "a" / "ISIC_0000043.jpg").read_bytes()


def test_cache_from_another_algorithm_is_ignored(tmp_path):
    cache = tmp_path / "hair-cache.json"
    sha = hashlib.sha256(HAIRY.read_bytes()).hexdigest()
    cache.write_text(json.dumps({"algorithm": "something-older", "images": {sha: [1, 1, 0.0]}}))
    [result] = run([job(HAIRY, tmp_path / "out")], cache)
    assert (result.width, result.hairy) == (1504, True)
    assert json.loads(cache.read_text())["algorithm"] == HAIR_ALGORITHM


def test_unreadable_cache_counts_as_empty(tmp_path):
    cache = tmp_path / "hair-cache.json"
    cache.write_text("{not json")
    [result] = run([job(HAIRY, tmp_path / "out")], cache)
    assert result.hairy is True
    assert result.sha256 in json.loads(cache.read_text())["images"]


@pytest.mark.parametrize("attempt", range(3))
def test_worker_threads_give_one_workers_results_in_job_order(tmp_path, attempt):
    sources = sorted(DEMO.glob("*.jpg"))[:12]
    alone = run([job(p, tmp_path / "a") for p in sources])
    pooled = run([job(p, tmp_path / "b") for p in sources], workers=os.cpu_count() or 2)
    assert [r.image_id for r in pooled] == [p.stem for p in sources]
    assert pooled == alone
    for p in sources:
        assert (tmp_path / "a" / p.name).read_bytes() == (tmp_path / "b" / p.name).read_bytes()


def test_image_stage_never_forks(tmp_path, monkeypatch):
    # a fork while OpenCV's threads exist deadlocks the child (opencv-python 5): nothing may fork here
    def refuse(*_):
        raise AssertionError("forked")
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)
    results = run([job(p, tmp_path / "out") for p in sorted(DEMO.glob("*.jpg"))[:10]], workers=2)
    assert all(r.error is None for r in results)


def test_a_stuck_image_stops_the_run_with_its_name_instead_of_hanging(tmp_path, monkeypatch):
    stuck = jpeg(tmp_path / "STUCK_1.jpg", cv2.resize(cv2.imread(str(WIDE)), (600, 400)))
    release = threading.Event()
    real = images_module.hair_score

    def hangs_on_stuck(image):
        if image.shape[:2] == (683, 1024):  # STUCK_1 at the working size: stands for a read that never returns
            release.wait(30)
        return real(image)
    monkeypatch.setattr(images_module, "hair_score", hangs_on_stuck)
    started = time.monotonic()
    try:
        with pytest.raises(MedsynthError, match=r"image .*STUCK_1\.jpg: no progress for 1 s"):
            process_images([job(WIDE, tmp_path / "out"), job(stuck, tmp_path / "out"), job(HAIRY, tmp_path / "out")],
                           workers=2, cache_path=None, progress=False, stall_timeout=1)
    finally:
        release.set()
    assert time.monotonic() - started < 10


def test_run_cut_short_keeps_the_analysed_images_in_the_cache(tmp_path):
    cache = tmp_path / "hair-cache.json"
    done = job(WIDE, tmp_path / "out")
    unwritable = ImageJob("ISIC_0000043", HAIRY, tmp_path / "gone" / "ISIC_0000043.jpg", 512)  # no such folder
    with pytest.raises(MedsynthError, match="cannot write"):
        run([done, unwritable], cache)
    sha = hashlib.sha256(WIDE.read_bytes()).hexdigest()
    assert json.loads(cache.read_text())["images"][sha][:2] == [1504, 1129]


@pytest.mark.parametrize("name", ["ISIC_0000070.jpg", "ISIC_0000043.jpg"])
def test_hair_score_does_not_depend_on_the_output_resolution(tmp_path, name):
    # the score is cached per image content, so it must not depend on which resolution analysed it first
    big = cv2.resize(cv2.imread(str(DEMO / name)), (6000, 4500), interpolation=cv2.INTER_CUBIC)
    src = jpeg(tmp_path / name, big)
    scores = {resolution: run([job(src, tmp_path / f"out{resolution}", resolution=resolution)])[0].hair_score
              for resolution in (1024, 2048, None)}
    assert scores[2048] == scores[1024] == scores[None], scores
