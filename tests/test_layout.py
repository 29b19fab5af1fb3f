"""The kohya training folder: layout, manifest, re-runs, interruptions and per-image problems."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.dataset import build as layout
from orchestrator.dataset import outfolder
from orchestrator.dataset.settings import DatasetSettings
from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.build import build_dataset
from orchestrator.common.paths import DEMO_DIR


def _settings(tmp_path: Path, **over) -> DatasetSettings:
    base = dict(csv=(DEMO_DIR / "metadata.csv",), images=(DEMO_DIR / "images",), out=tmp_path / "ds",
                workers=2, resolution=512)
    base.update(over)
    return DatasetSettings(**base)


def _manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build")
    build_dataset(_settings(out), progress=False)
    return out / "ds"


def test_demo_build_writes_one_image_and_one_line_caption_per_melanoma(demo_build):
    class_dir = demo_build / "train" / "1_melanoma"
    images = sorted(class_dir.glob("*.jpg"))
    assert len(images) == 20
    for image in images:
        caption = image.with_suffix(".caption").read_text(encoding="utf-8")
        assert caption.endswith("\n") and caption.count("\n") == 1
        assert caption.startswith("photo of ") and "me1anoma" in caption
        assert "  " not in caption and "nan" not in caption and " on ," not in caption


def test_demo_images_are_resized_to_the_long_side_without_upscaling(demo_build):
    rows = _manifest(demo_build)
    for row in rows:
        img = cv2.imread(str(demo_build / row["output_path"]))
        assert max(img.shape[:2]) == min(512, max(int(row["width"]), int(row["height"])))
        assert (img.shape[1], img.shape[0]) == (int(row["out_width"]), int(row["out_height"]))
        # aspect kept within a pixel of rounding
        assert abs(img.shape[1] / img.shape[0] - int(row["width"]) / int(row["height"])) < 0.01


def test_manifest_records_metadata_hash_and_caption_of_every_image(demo_build):
    rows = _manifest(demo_build)
    assert [r["image_id"] for r in rows] == sorted(r["image_id"] for r in rows)
    assert {r["status"] for r in rows} == {"ok"}
    row = next(r for r in rows if r["image_id"] == "ISIC_0000002")
    assert (row["sex"], row["age"], row["site"], row["license"]) == ("female", "60", "upper extremity", "CC-0")
    src = DEMO_DIR / "images" / "ISIC_0000002.jpg"
    assert row["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    caption = (demo_build / row["output_path"]).with_suffix(".caption").read_text(encoding="utf-8").strip()
    assert row["caption"] == caption
    assert caption.startswith("photo of female skin, me1anoma on upper extremity, at age 60")
    meta = json.loads((demo_build / "dataset.json").read_text())
    assert meta["images"] == 20 and meta["image_dir"] == "train/1_melanoma" and meta["resolution"] == 512
    assert meta["manifest_sha256"] == hashlib.sha256((demo_build / "manifest.csv").read_bytes()).hexdigest()
    assert "images: 20" in (demo_build / "report.txt").read_text()


def test_report_png_draws_one_bar_per_counted_value_in_one_panel_per_field(demo_build):
    chart = cv2.imread(str(demo_build / "report.png"))
    report = (demo_build / "report.txt").read_text()
    bar = np.all(chart == (0x4B, 0x56, 0x8C), axis=2)  # the bars' colour, BGR
    panels = np.flatnonzero(np.diff(bar.any(axis=0).astype(int)) == 1)  # left edges of bar columns
    assert len(panels) == 4 == sum(line.endswith(":") for line in report.splitlines())  # sex, age, site, hair
    sex_column = bar[:, panels[0] + 1]
    bars = np.count_nonzero(np.diff(sex_column.astype(int)) == 1)
    assert bars == report.split("age band:")[0].count("\n  ")  # one bar per sex counted


def test_rebuild_leaves_manifest_byte_identical_and_reuses_every_image(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    build_dataset(settings, progress=False)
    first = (settings.out / "manifest.csv").read_bytes()
    second = build_dataset(settings, progress=False)
    assert (settings.out / "manifest.csv").read_bytes() == first
    assert second.reused == 20


def test_source_files_are_never_modified(tmp_path):
    before = _tree_digest(DEMO_DIR)
    build_dataset(_settings(tmp_path), progress=False)
    assert _tree_digest(DEMO_DIR) == before


def test_interrupted_build_keeps_previous_dataset_and_rerun_completes(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    build_dataset(settings, progress=False)
    previous = _tree_digest(settings.out)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(layout, "render_captions", crash)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(_settings(tmp_path, resolution=256), progress=False)
    assert _tree_digest(settings.out) == previous  # the old dataset is untouched
    monkeypatch.undo()

    result = build_dataset(_settings(tmp_path, resolution=256), progress=False)
    assert result.written == 20
    assert not any(p.name.startswith(".ds.") for p in tmp_path.iterdir())
    assert json.loads((settings.out / "dataset.json").read_text())["resolution"] == 256


def test_swap_cut_in_the_middle_is_recovered_on_the_next_run(tmp_path):
    settings = _settings(tmp_path)
    build_dataset(settings, progress=False)
    shutil.move(settings.out, tmp_path / ".ds.old")  # as if killed between the two renames
    outfolder.recover_interrupted(settings.out)
    assert (settings.out / "manifest.csv").is_file()


def _images_with(tmp_path: Path, broken: dict[str, bytes]) -> Path:
    images = tmp_path / "images"
    shutil.copytree(DEMO_DIR / "images", images)
    for name, data in broken.items():
        (images / f"{name}.jpg").write_bytes(data)
    return images


def test_missing_and_corrupt_images_are_skipped_and_recorded(tmp_path):
    images = _images_with(tmp_path, {"ISIC_0000002": b"not a jpeg at all"})
    (images / "ISIC_0000004.jpg").unlink()
    result = build_dataset(_settings(tmp_path, images=(images,)), progress=False)
    assert (result.written, result.skipped) == (18, 2)
    rows = {r["image_id"]: r for r in _manifest(result.out)}
    assert rows["ISIC_0000004"]["status"] == "skipped" and rows["ISIC_0000004"]["skip_reason"] == "missing"
    assert rows["ISIC_0000002"]["status"] == "skipped" and rows["ISIC_0000002"]["skip_reason"]
    assert not (result.out / "train" / "1_melanoma" / "ISIC_0000002.jpg").exists()
    assert not (result.out / "train" / "1_melanoma" / "ISIC_0000002.caption").exists()


def test_strict_makes_a_missing_image_fatal_naming_csv_and_line(tmp_path):
    images = _images_with(tmp_path, {})
    (images / "ISIC_0000004.jpg").unlink()
    with pytest.raises(MedsynthError, match=r"metadata\.csv:6: image 'ISIC_0000004' not found"):
        build_dataset(_settings(tmp_path, images=(images,), strict=True), progress=False)
    assert not (tmp_path / "ds").exists()


def test_strict_makes_a_corrupt_image_fatal(tmp_path):
    images = _images_with(tmp_path, {"ISIC_0000002": b"\xff\xd8garbage"})
    with pytest.raises(MedsynthError, match=r"metadata\.csv:4: image .*ISIC_0000002\.jpg"):
        build_dataset(_settings(tmp_path, images=(images,), strict=True), progress=False)


def test_no_resize_keeps_the_original_bytes(tmp_path):
    result = build_dataset(_settings(tmp_path, resize=False), progress=False)
    src = DEMO_DIR / "images" / "ISIC_0000002.jpg"
    dst = result.out / "train" / "1_melanoma" / "ISIC_0000002.jpg"
    assert dst.read_bytes() == src.read_bytes()


def test_repeats_and_class_name_name_the_kohya_folder(tmp_path):
    result = build_dataset(_settings(tmp_path, repeats=3, class_name="nevus", diagnoses=("nevus",)), progress=False)
    assert len(list((result.out / "train" / "3_nevus").glob("*.caption"))) == 20


def test_dry_run_writes_nothing(tmp_path):
    result = build_dataset(_settings(tmp_path), dry_run=True, progress=False)
    assert result.selected == 20 and result.dry_run
    assert list(tmp_path.iterdir()) == []


def test_no_usable_image_is_an_error_and_leaves_no_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MedsynthError, match="no usable images among 20 selected rows"):
        build_dataset(_settings(tmp_path, images=(empty,)), progress=False)
    assert not (tmp_path / "ds").exists()


def test_isic2020_row_gets_the_seed_caption(tmp_path, isic_dir):
    images = tmp_path / "jpeg"
    images.mkdir()
    # a real-looking smooth lesion (no hair) under the id of the example
    img = np.full((480, 640, 3), (150, 170, 210), np.uint8)
    cv2.circle(img, (320, 240), 120, (60, 70, 110), -1)
    cv2.imwrite(str(images / "ISIC_0149568.jpg"), cv2.GaussianBlur(img, (31, 31), 0))
    result = build_dataset(DatasetSettings(csv=(isic_dir / "ISIC_2020_Training_GroundTruth.csv",), images=(images,),
                                           out=tmp_path / "ds", workers=1), progress=False)
    rows = {r["image_id"]: r for r in _manifest(result.out)}
    assert len(rows) == 584 and result.written == 1
    assert rows["ISIC_0149568"]["caption"] == "photo of female skin, me1anoma on upper extremity, at age 55"


# ---- the out folder: the build replaces it whole, so it must not hold anything but an earlier build ----

@pytest.mark.parametrize("dry_run", [False, True])
def test_out_folder_holding_the_sources_is_refused_and_left_intact(tmp_path, dry_run):
    data = tmp_path / "data"
    shutil.copytree(DEMO_DIR, data)
    before = _tree_digest(tmp_path)
    for out in (data, tmp_path, data / "images" / ".."):
        settings = _settings(tmp_path, csv=(data / "metadata.csv",), images=(data / "images",), out=out)
        with pytest.raises(MedsynthError, match=r"^out .* holds the source .*choose another out folder$"):
            build_dataset(settings, dry_run=dry_run, progress=False)
    assert _tree_digest(tmp_path) == before


def test_non_empty_folder_that_is_not_a_dataset_is_refused(tmp_path):
    keep = tmp_path / "Documents"
    keep.mkdir()
    (keep / "thesis.txt").write_text("precious")
    with pytest.raises(MedsynthError, match=r"Documents is a non-empty folder without dataset\.json"):
        build_dataset(_settings(tmp_path, out=keep), progress=False)
    assert (keep / "thesis.txt").read_text() == "precious"


def test_out_that_is_a_file_is_a_one_line_error_and_the_file_is_kept(tmp_path):
    target = tmp_path / "ds"
    target.write_text("not a folder")
    with pytest.raises(MedsynthError, match=r"exists and is not a plain folder") as caught:
        build_dataset(_settings(tmp_path), progress=False)
    assert "\n" not in str(caught.value)
    assert target.read_text() == "not a folder"


def test_empty_out_folder_is_built_into(tmp_path):
    (tmp_path / "ds").mkdir()
    result = build_dataset(_settings(tmp_path), progress=False)
    assert result.written == 20 and (tmp_path / "ds" / "dataset.json").is_file()


@pytest.mark.parametrize("text, error", [
    ("photo of {{ sexx }} skin", r"caption template .*bad\.j2, line 1: 'sexx' is undefined"),
    ("photo of {% if sex %}skin", r"caption template .*bad\.j2, line 1: "),
])
def test_caption_template_error_stops_before_any_image_work(tmp_path, monkeypatch, text, error):
    template = tmp_path / "bad.j2"
    template.write_text(text, encoding="utf-8")

    def refuse(*args, **kwargs):
        raise AssertionError("image stage ran before the template was checked")
    monkeypatch.setattr(layout, "process_images", refuse)
    for dry_run in (True, False):
        with pytest.raises(MedsynthError, match=error):
            build_dataset(_settings(tmp_path, caption_template=template), dry_run=dry_run, progress=False)
    assert not (tmp_path / "ds").exists() and not (tmp_path / ".ds.building").exists()


# ---- sources gain no files: the dataset, its cache and its lock never go into an image folder ----

def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("out", ["images/ds", "images/sub/ds", "link/ds"])
def test_out_inside_an_image_folder_is_refused_and_the_folder_gains_no_files(tmp_path, out, dry_run):
    images = tmp_path / "images"
    shutil.copytree(DEMO_DIR / "images", images)
    (tmp_path / "link").symlink_to(images)  # the same folder by another name
    before, listed = _tree_digest(images), _listing(images)
    settings = _settings(tmp_path, images=(images,), out=tmp_path / out, workers=1)
    with pytest.raises(MedsynthError, match=r"^out .* is inside the image folder .*images: source folders must "
                                            r"gain no files; choose an out folder outside it$"):
        build_dataset(settings, dry_run=dry_run, progress=False)
    assert _listing(images) == listed and _tree_digest(images) == before


# ---- one build at a time per out folder ----

def test_a_build_is_refused_while_another_holds_the_out_folder_and_its_work_is_kept(tmp_path):
    settings = _settings(tmp_path, workers=1)
    live = tmp_path / ".ds.building" / "train" / "1_melanoma"
    with outfolder.build_lock(settings.out):  # as a running build holds it, with its half-built folder
        live.mkdir(parents=True)
        (live / "ISIC_0000002.jpg").write_bytes(b"being written")
        with pytest.raises(MedsynthError, match=rf"^out {settings.out}: another medsynth dataset build "
                                                rf"\(pid {os.getpid()}\) is building this folder"):
            build_dataset(settings, progress=False)
        assert (live / "ISIC_0000002.jpg").read_bytes() == b"being written"
    assert not (tmp_path / ".ds.lock").exists()  # released: the lock file goes with it


def test_the_lock_file_of_a_killed_build_does_not_block_the_next_one(tmp_path):
    settings = _settings(tmp_path, workers=1)
    (tmp_path / ".ds.lock").write_text("999999\n")  # left by a build killed with SIGKILL: no process holds it
    (tmp_path / ".ds.building").mkdir()
    (tmp_path / ".ds.building" / "half.jpg").write_bytes(b"half")
    result = build_dataset(settings, progress=False)
    assert result.written == 20
    assert not any(p.name.startswith(".ds.") for p in tmp_path.iterdir())


def test_a_failed_build_removes_the_folders_it_created_above_out(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MedsynthError, match="no usable images"):
        build_dataset(_settings(tmp_path, images=(empty,), out=tmp_path / "new" / "deeper" / "ds"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_dry_run_report_counts_selected_missing_and_duplicates_without_skips(tmp_path):
    from orchestrator.dataset.report import format_report

    images = _images_with(tmp_path, {})
    (images / "ISIC_0000013.jpg").unlink()
    dups = tmp_path / "dups.csv"
    dups.write_text("image_name_1,image_name_2\nISIC_0000002,ISIC_0000004\n")
    result = build_dataset(_settings(tmp_path, images=(images,), duplicates=dups), dry_run=True, progress=False)
    assert (result.selected, result.missing, result.duplicates) == (19, 1, 1)
    text = format_report(result.report)
    assert text.splitlines()[0] == "selected: 19   missing images: 1   duplicates dropped: 1   to build: 18"
    assert "skipped" not in text
    # the counts by field are of the 18 rows a build would take
    assert sum(result.report.by_field["sex"].values()) == 18
