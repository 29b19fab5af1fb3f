"""Loss masks: `dataset build --masks auto|DIR` writes them as the training images' alpha channel, `masked_loss`
renders sd-scripts' alpha_mask and is refused without masks, and the review shows a few of them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import toml
from kohya_samples import dataset as sample_dataset, edited, train as sample_train
from mask_helpers import RESOLUTION, build_demo
from review_helpers import make_run
from train_helpers import make_dataset

from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import DEMO_DIR
from orchestrator.dataset.record import read_dataset
from orchestrator.kohya.validate import check_combinations
from orchestrator.review.job import review_folder
from orchestrator.train.plan import prepare
from orchestrator.train.settings import load_settings
from orchestrator.vision.lesion import analysis_image, field_of_view, lesion_mask, lesion_region

MARGIN = 0.05


def manifest(ds: Path) -> list[dict[str, str]]:
    with (ds / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def auto(tmp_path_factory) -> Path:
    return build_demo(tmp_path_factory.mktemp("auto") / "ds", masks="auto", mask_margin=MARGIN).out


def plan(root: Path, dataset: Path, *sets: str):
    settings = load_settings(preset_name="default", cwd=root,
                             options={"dataset": str(dataset), "pretrained_model_name_or_path": "sdxl"},
                             sets=[f"runs_dir={json.dumps(str(root / 'runs'))}", "train_batch_size=1", *sets])
    return prepare(settings, gpus=None, run_name="r")


def test_auto_masks_are_the_alpha_of_every_demo_image_at_its_size(auto):
    rows = manifest(auto)
    assert [r["status"] for r in rows] == ["ok"] * 20
    assert not list((auto / "train" / "1_melanoma").glob("*.jpg"))
    for row in rows:
        assert row["output_path"].endswith(".png")
        rgba = cv2.imread(str(auto / row["output_path"]), cv2.IMREAD_UNCHANGED)
        assert rgba.shape == (int(row["out_height"]), int(row["out_width"]), 4)
        assert max(rgba.shape[:2]) == RESOLUTION
        share = float((rgba[..., 3] == 255).mean())
        assert 0.02 < share < 0.95, (row["image_id"], share)   # a lesion, not nothing and not everything
        assert set(np.unique(rgba[..., 3])) <= {0, 255}


def test_auto_mask_holds_the_lesion_and_reaches_the_margin_beyond_it(auto):
    for path in sorted((auto / "train" / "1_melanoma").glob("*.png"))[:6]:
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        inside = rgba[..., 3] > 0
        small = analysis_image(rgba[..., :3])
        lesion = lesion_mask(small, field_of_view(small))
        lesion = cv2.resize(lesion.astype(np.uint8), inside.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        assert (lesion & ~inside).sum() <= 0.01 * lesion.sum(), path.name   # the lesion lies inside the mask
        # every masked pixel lies within the margin of the lesion, and the margin is used
        distance = cv2.distanceTransform((~lesion).astype(np.uint8), cv2.DIST_L2, 5)
        margin_px = MARGIN * max(inside.shape)
        assert distance[inside].max() <= margin_px + 2, path.name
        assert distance[inside].max() >= 0.5 * margin_px, path.name
        assert inside.sum() > lesion.sum()


def test_a_wider_margin_gives_a_larger_mask():
    image = cv2.imread(str(DEMO_DIR / "images" / "ISIC_0000002.jpg"))
    areas = [int(lesion_region(image, margin).sum()) for margin in (0.0, 0.05, 0.1)]
    assert 0 < areas[0] < areas[1] < areas[2]


def test_dataset_json_records_the_masks_and_training_reads_them(auto):
    record = json.loads((auto / "dataset.json").read_text(encoding="utf-8"))
    assert (record["masks"], record["mask_margin"]) == ("auto", MARGIN)
    assert read_dataset(auto).masks == "auto"


def _ellipse_mask(image_id: str, folder: Path, name: str) -> np.ndarray:
    h, w = cv2.imread(str(DEMO_DIR / "images" / f"{image_id}.jpg")).shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 4, h // 5), 0, 0, 360, 255, -1)
    assert cv2.imwrite(str(folder / name), mask)
    return mask


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("user")
    masks = root / "ISIC2018_Task1_Training_GroundTruth"
    masks.mkdir()
    drawn = {"ISIC_0000002": _ellipse_mask("ISIC_0000002", masks, "ISIC_0000002_segmentation.png"),
             "ISIC_0000004": _ellipse_mask("ISIC_0000004", masks, "ISIC_0000004.png")}
    (masks / "ISIC_0000013_segmentation.png").write_bytes(b"not a png")
    return build_demo(root / "ds", masks=str(masks), mask_margin=0.0).out, drawn


def test_user_masks_are_matched_by_image_id_and_scaled_to_the_training_image(user):
    ds, drawn = user
    rows = {r["image_id"]: r for r in manifest(ds)}
    for image_id, mask in drawn.items():
        assert rows[image_id]["status"] == "ok"
        alpha = cv2.imread(str(ds / rows[image_id]["output_path"]), cv2.IMREAD_UNCHANGED)[..., 3] > 0
        expected = cv2.resize(mask, alpha.shape[::-1], interpolation=cv2.INTER_AREA) > 127
        assert (alpha == expected).mean() > 0.995, image_id
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["masks"].endswith("GroundTruth")


def test_images_without_a_usable_user_mask_are_skipped_with_the_reason(user):
    ds, drawn = user
    rows = {r["image_id"]: r for r in manifest(ds)}
    assert rows["ISIC_0000013"]["skip_reason"] == "mask unreadable"
    missing = [r for r in rows.values() if r["image_id"] not in drawn and r["image_id"] != "ISIC_0000013"]
    assert {r["skip_reason"] for r in missing} == {"mask missing"} and len(missing) == 17
    assert sorted(p.stem for p in (ds / "train" / "1_melanoma").glob("*.png")) == sorted(drawn)
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["images"] == 2


def test_strict_build_stops_at_a_missing_mask_naming_it(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    with pytest.raises(MedsynthError) as info:
        build_demo(tmp_path / "ds", masks=str(masks), strict=True)
    assert "ISIC_0000002_segmentation.png" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "ds").exists()


def test_a_mask_folder_that_is_missing_is_refused_in_one_line(tmp_path):
    with pytest.raises(MedsynthError, match="mask folder not found"):
        build_demo(tmp_path / "ds", masks=str(tmp_path / "nowhere"))


def test_masked_loss_is_refused_for_a_dataset_without_masks(tmp_path):
    with pytest.raises(MedsynthError, match=r"has none: rebuild it with 'medsynth dataset build --masks auto'"):
        plan(tmp_path, make_dataset(tmp_path / "ds"), "masked_loss=true")


def test_masked_loss_renders_sd_scripts_alpha_mask_and_parses_back(auto, tmp_path):
    files = plan(tmp_path, auto, "masked_loss=true").files
    train, dataset = toml.loads(files["train.toml"]), toml.loads(files["dataset.toml"])
    assert train["training"]["masked_loss"] is True
    (subset,) = dataset["datasets"][0]["subsets"]
    assert subset["alpha_mask"] is True and subset["image_dir"] == str(auto.resolve() / "train" / "1_melanoma")
    unmasked = plan(tmp_path, auto).files   # masks built, not used: the images train whole
    assert "alpha_mask" not in toml.loads(unmasked["dataset.toml"])["datasets"][0]["subsets"][0]
    assert "masked_loss" not in toml.loads(unmasked["train.toml"])["training"]


def test_masked_loss_with_a_subset_without_masks_is_refused():
    train = edited(sample_train(), "training.masked_loss", True)
    with pytest.raises(MedsynthError, match=r"subsets\[0\]: train.toml \[training\] masked_loss = true but the subset "
                                            r"has neither alpha_mask"):
        check_combinations(train, sample_dataset(), source="")
    check_combinations(train, edited(sample_dataset(), "datasets.0.subsets.0.alpha_mask", True), source="")


def test_a_reg_subset_without_alpha_mask_is_accepted_with_masked_loss():
    # a reg image has no mask: sd-scripts trains it on the whole image (a mask of ones), as meant
    train = edited(sample_train(), "training.masked_loss", True)
    masked = edited(sample_dataset(), "datasets.0.subsets.0.alpha_mask", True)
    reg = {"image_dir": "/data/reg/1_nevus", "num_repeats": 1, "is_reg": True}
    check_combinations(train, edited(masked, "datasets.0.subsets", [masked["datasets"][0]["subsets"][0], reg]),
                       source="")
    with pytest.raises(MedsynthError, match=r"subsets\[1\]: .* has neither alpha_mask"):
        check_combinations(train, edited(masked, "datasets.0.subsets",
                                         [masked["datasets"][0]["subsets"][0], {**reg, "is_reg": False}]), source="")


def test_review_of_a_masked_loss_run_shows_masks_over_their_images(auto, tmp_path):
    run_dir = make_run(tmp_path, auto, sets=["masked_loss=true"])
    review_folder(run_dir, out=None, epochs=(), steps=(), references=2, progress=False, say=lambda _: None)
    page = (run_dir / "review.html").read_text(encoding="utf-8")
    assert "<h2>Loss masks</h2>" in page and 'src="review_files/masks.jpg"' in page
    strip = cv2.imread(str(run_dir / "review_files" / "masks.jpg"))
    assert strip.shape[0] == 192 and strip.shape[1] == 6 * 192 + 5 * 4
    plain = make_run(tmp_path, auto, name="r2")
    review_folder(plain, out=None, epochs=(), steps=(), references=2, progress=False, say=lambda _: None)
    assert "Loss masks" not in (plain / "review.html").read_text(encoding="utf-8")


def test_cli_masks_option_builds_masked_images_and_names_a_bad_margin_by_its_flag(tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli.main import main

    args = ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images", str(DEMO_DIR / "images"),
            "--out", str(tmp_path / "ds"), "--resolution", "128", "--quiet", "--workers", "2", "--masks", "auto"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert len(list((tmp_path / "ds" / "train" / "1_melanoma").glob("*.png"))) == 20
    bad = CliRunner().invoke(main, [*args, "--mask-margin", "0.7"])
    assert bad.exit_code == 1 and "--mask-margin must be between 0 and 0.5" in bad.output


def test_rebuilding_a_masked_dataset_masks_fresh_images_rather_than_reusing_the_masked_ones(tmp_path):
    build_demo(tmp_path / "ds", masks="auto")
    again = build_demo(tmp_path / "ds", masks="auto")
    assert again.reused == 0 and again.written == 20
    plain = build_demo(tmp_path / "ds")   # and an unmasked rebuild writes JPEGs again
    images = sorted((tmp_path / "ds" / "train" / "1_melanoma").glob("*.*g"))
    assert plain.written == 20 and {p.suffix for p in images} == {".jpg"}
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[2] == 3 for p in images)
