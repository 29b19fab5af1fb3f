"""The memorization screen (orchestrator/vision/memorization.py): planted copies of the 40 CC0 demo images,
re-encoded, resized, flipped, rotated, noised or cropped, are flagged with their source; distinct demo lesions are not
(leave-one-out, the threshold calibrated without the image screened); and `medsynth evaluate` records the screen
in evaluation.json and shows a flagged pair on its page; `medsynth generate --drop-memorized` sets planted copies
in a synthetic/ folder aside."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import DEMO_DIR
from orchestrator.evaluate.features import embeddings, image_set
from orchestrator.vision.memorization import MIN_REAL, calibrate, embed, screen, similarity_matrix
from orchestrator.evaluate.record import RECORD_NAME, read_evaluation_record
from orchestrator.generate.memorized import MEMORIZED_CSV, MEMORIZED_DIR, drop_memorized, training_folder
from orchestrator.generate.outputs import EXTRA_COLUMNS, ISIC2020_COLUMNS, read_synthetic_metadata, write_metadata

DEMO_IMAGES = sorted((DEMO_DIR / "images").glob("*.jpg"))


def jpeg70(image: np.ndarray) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def noised(image: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 5, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def centre_crop(image: np.ndarray, width: float, height: float) -> np.ndarray:
    h, w = image.shape[:2]
    dy, dx = int(h * (1 - height) / 2), int(w * (1 - width) / 2)
    return image[dy:h - dy, dx:w - dx]


PLANTED = {
    "jpeg q70": lambda image, i: jpeg70(image),
    "resized 0.5x": lambda image, i: cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
    "flipped horizontally": lambda image, i: cv2.flip(image, 1),
    "rotated 90": lambda image, i: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
    "noised sigma 5": noised,
    # what a memorized training image can look like: a crop of it, as training crops images to its buckets
    "centre crop 0.8": lambda image, i: centre_crop(image, 0.8, 0.8),
    "bucket crop 1024x672": lambda image, i: cv2.resize(centre_crop(image, 1.0, 0.875), (1024, 672),
                                                         interpolation=cv2.INTER_AREA),
}


@pytest.fixture(scope="module")
def demo() -> tuple[list[np.ndarray], list[tuple[str, np.ndarray]]]:
    """The demo images at full size, and their embeddings as `medsynth evaluate` computes them."""
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in DEMO_IMAGES]
    return images, embeddings(image_set(DEMO_DIR))


def test_the_demo_set_is_the_40_images_the_rates_are_measured_on(demo):
    images, real = demo
    assert len(images) == len(real) == 40 and all(e is not None for _, e in real)


@pytest.mark.parametrize("kind", PLANTED)
def test_every_planted_copy_is_flagged_with_its_source(demo, kind):
    images, real = demo
    planted = [(f"copy_of_{name}", embed(PLANTED[kind](image, i)))
               for i, (image, (name, _)) in enumerate(zip(images, real))]
    found = screen(real, planted)
    assert found.calibration.threshold is not None
    missed = [(m.synthetic, m.nearest_real, m.similarity) for m in found.matches
              if not m.flagged or m.nearest_real != m.synthetic.removeprefix("copy_of_")]
    assert missed == [], f"{kind}: {len(missed)} of 40 copies not flagged with their source (threshold " \
                         f"{found.calibration.threshold}): {missed[:3]}"


def test_no_distinct_demo_lesion_is_flagged_leave_one_out(demo):
    """Each demo image screened against the other 39, with the threshold calibrated on those 39 alone."""
    _, real = demo
    false_positives = []
    for i, (name, vector) in enumerate(real):
        others = real[:i] + real[i + 1:]
        match = screen(others, [(name, vector)]).matches[0]
        assert match.flagged is not None
        if match.flagged:
            false_positives.append((name, match.nearest_real, match.similarity))
    assert false_positives == []


def test_the_threshold_sits_between_distinct_lesions_and_copies(demo):
    _, real = demo
    calibration = calibrate(np.stack([e for _, e in real]))
    assert max(calibration.nearest_real) < calibration.threshold < 0.99
    assert calibration.as_dict()["real_nearest"]["max"] == max(calibration.nearest_real)


def test_similarity_ignores_orientation_but_not_content(demo):
    images, real = demo
    vectors = np.stack([embed(cv2.rotate(images[0], cv2.ROTATE_180)), embed(cv2.flip(images[0], 0))])
    sims = similarity_matrix(vectors, np.stack([e for _, e in real]))
    assert (sims[:, 0] > 0.999).all() and (sims[:, 1:] < 0.95).all()


def test_too_few_real_images_say_the_calibration_is_unreliable_and_flag_nothing(demo):
    _, real = demo
    found = screen(real[:MIN_REAL - 1], [("copy.jpg", real[0][1])])
    assert found.calibration.threshold is None and "unreliable" in found.calibration.note
    match = found.matches[0]
    assert match.nearest_real == real[0][0] and match.similarity == pytest.approx(1.0, abs=1e-3)
    assert match.flagged is None and found.flagged == [] and found.screened == 0


def test_an_unreadable_synthetic_image_is_not_screened(demo):
    _, real = demo
    found = screen(real, [("broken.png", None), ("copy.jpg", real[3][1])])
    assert [(m.synthetic, m.nearest_real, m.flagged) for m in found.matches] == [
        ("broken.png", None, None), ("copy.jpg", real[3][0], True)]
    assert found.screened == 1


def evaluate_linked(tmp_path: Path, real: list[Path], synth: list[Path], planted: np.ndarray | None = None
                    ) -> tuple[Path, str]:
    """`medsynth evaluate` of two folders linking to demo images (and SYNTH holding `planted` as copy.jpg):
    (its --out folder, its output)."""
    for folder, paths in (("real", real), ("synth", synth)):
        (tmp_path / folder).mkdir()
        for path in paths:
            (tmp_path / folder / path.name).symlink_to(path)
    if planted is not None:
        cv2.imwrite(str(tmp_path / "synth" / "copy.jpg"), planted)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "real"), str(tmp_path / "synth"), "--out",
                                       str(out), "--quiet", "--workers", "2"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_evaluate_records_the_screen_and_shows_the_flagged_pair(tmp_path):
    source = cv2.imread(str(DEMO_IMAGES[7]), cv2.IMREAD_COLOR)
    # beside the copy, two lesions the real set does not hold
    out, output = evaluate_linked(tmp_path, DEMO_IMAGES[:20], DEMO_IMAGES[30:32], cv2.flip(jpeg70(source), 1))
    assert "memorization screen: 1 of 3 synthetic images flagged" in output

    memo = json.loads((out / RECORD_NAME).read_text())["memorization"]
    assert memo["flagged"] == 1 and memo["calibration"]["real_images"] == 20
    flags = {m["synthetic"]: (m["nearest_real"], m["flagged"]) for m in memo["images"]}
    assert flags["copy.jpg"] == (DEMO_IMAGES[7].name, True)
    assert [flags[p.name][1] for p in DEMO_IMAGES[30:32]] == [False, False]
    assert read_evaluation_record(out).memorization == memo

    page = (out / "evaluation.html").read_text()
    assert f'data-synthetic="copy.jpg" data-real="{DEMO_IMAGES[7].name}"' in page
    for side in ("synthetic", "real"):
        thumb = out / "evaluation_files" / f"memorized_000_{side}.png"
        assert f'src="evaluation_files/{thumb.name}"' in page
        assert max(cv2.imread(str(thumb)).shape[:2]) == 200


def test_a_page_with_nothing_flagged_says_so(tmp_path):
    out, output = evaluate_linked(tmp_path, DEMO_IMAGES[:10], DEMO_IMAGES[10:12])
    assert "memorization screen: 0 of 2 synthetic images flagged" in output
    page = (out / "evaluation.html").read_text()
    assert 'id="memorization" data-flagged="0">None of the 2 synthetic images is flagged' in page


def test_evaluate_with_too_few_real_images_says_it_did_not_screen(tmp_path):
    out, output = evaluate_linked(tmp_path, DEMO_IMAGES[:MIN_REAL - 1], [], cv2.imread(str(DEMO_IMAGES[0])))
    assert "memorization screen: not screened (calibration unreliable: 4 real images, 5 needed" in output
    memo = json.loads((out / RECORD_NAME).read_text())["memorization"]
    assert memo["calibration"]["threshold"] is None and memo["images"][0]["flagged"] is None
    assert 'id="memorization" data-flagged="">Not screened: calibration unreliable' in \
        (out / "evaluation.html").read_text()


def test_an_evaluation_json_from_before_the_screen_still_reads(tmp_path):
    record = {"schema_version": 1, "note": "", "sets": {}, "features": [], "run": None, "fid_kid": None,
              "images": {}}
    (tmp_path / RECORD_NAME).write_text(json.dumps(record))
    assert read_evaluation_record(tmp_path).memorization is None


def test_a_hand_edited_screen_is_one_line_naming_the_file_and_key(tmp_path):
    record = {"schema_version": 1, "note": "", "sets": {}, "features": [], "run": None, "fid_kid": None,
              "images": {}, "memorization": [1]}
    (tmp_path / RECORD_NAME).write_text(json.dumps(record))
    with pytest.raises(MedsynthError) as raised:
        read_evaluation_record(tmp_path)
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / RECORD_NAME) in message and "'memorization'" in message


# ---- `medsynth generate --drop-memorized` (orchestrator/generate/memorized.py) on a synthetic/ folder

def synthetic_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset's train/ (demo images 0-29, as `dataset build` nests them) and a generate output whose
    SYN_0000002 and SYN_0000004 are planted copies of training images 3 and 11, the other three distinct demo
    lesions, all PNGs as sdxl_gen_img.py writes them, listed in metadata.csv with a skin_tone column."""
    train = tmp_path / "ds" / "train" / "1_melanoma"
    train.mkdir(parents=True)
    for path in DEMO_IMAGES[:30]:
        (train / path.name).symlink_to(path)
    images = tmp_path / "synthetic" / "images"
    images.mkdir(parents=True)
    sources = {1: DEMO_IMAGES[30], 2: DEMO_IMAGES[3], 3: DEMO_IMAGES[31], 4: DEMO_IMAGES[11], 5: DEMO_IMAGES[32]}
    planted = {2: lambda image: cv2.flip(jpeg70(image), 1),
               4: lambda image: cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)}
    rows = []
    for n, source in sources.items():
        image = cv2.imread(str(source), cv2.IMREAD_COLOR)
        assert cv2.imwrite(str(images / f"SYN_{n:07d}.png"), planted.get(n, lambda i: i)(image))
        rows.append({**dict.fromkeys(ISIC2020_COLUMNS + EXTRA_COLUMNS, ""), "image_name": f"SYN_{n:07d}",
                     "seed": str(n), "skin_tone": "light"})
    write_metadata(tmp_path / "synthetic" / "metadata.csv", rows, ["skin_tone"])
    return tmp_path / "synthetic", tmp_path / "ds" / "train"


def test_drop_memorized_sets_the_planted_copies_aside_and_unlists_them(tmp_path):
    synthetic, train = synthetic_folder(tmp_path)
    dropped = drop_memorized(synthetic, train)
    assert dropped.moved == ["SYN_0000002.png", "SYN_0000004.png"] and dropped.screen.screened == 5
    assert sorted(p.name for p in (synthetic / MEMORIZED_DIR).iterdir()) == dropped.moved
    assert sorted(p.name for p in (synthetic / "images").iterdir()) == \
        ["SYN_0000001.png", "SYN_0000003.png", "SYN_0000005.png"]
    rows = read_synthetic_metadata(synthetic / "metadata.csv")
    assert [(r["image_name"], r["seed"], r["skin_tone"]) for r in rows] == \
        [("SYN_0000001", "1", "light"), ("SYN_0000003", "3", "light"), ("SYN_0000005", "5", "light")]
    # the threshold is the one `medsynth evaluate DATASET SYNTH` calibrates on the same training images
    threshold = screen(embeddings(image_set(train / "1_melanoma")), []).calibration.threshold
    with (synthetic / MEMORIZED_CSV).open(newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert [(r["synthetic_image"], r["nearest_real_image"], r["threshold"]) for r in listed] == [
        ("SYN_0000002.png", str(train / "1_melanoma" / DEMO_IMAGES[3].name), f"{threshold:.4f}"),
        ("SYN_0000004.png", str(train / "1_melanoma" / DEMO_IMAGES[11].name), f"{threshold:.4f}")]
    assert all(float(r["similarity"]) >= threshold for r in listed)
    assert sorted(p.name for p in synthetic.iterdir()) == ["images", "memorized", "memorized.csv", "metadata.csv"]


def test_a_second_drop_finds_nothing_and_changes_no_file(tmp_path):
    synthetic, train = synthetic_folder(tmp_path)
    drop_memorized(synthetic, train)
    files = [synthetic / "metadata.csv", synthetic / MEMORIZED_CSV, *sorted(synthetic.rglob("*.png"))]
    before = {p: p.read_bytes() for p in files}
    again = drop_memorized(synthetic, train)
    assert again.moved == [] and again.screen.screened == 3
    assert {p: p.read_bytes() for p in sorted(synthetic.rglob("*")) if p.is_file()} == before


def test_a_drop_killed_before_its_moves_is_completed_by_the_next(tmp_path):
    synthetic, train = synthetic_folder(tmp_path)
    drop_memorized(synthetic, train)
    listed = (synthetic / MEMORIZED_CSV).read_text()
    # as if killed after memorized.csv was written: one image not yet moved, metadata.csv not yet rewritten
    os.replace(synthetic / MEMORIZED_DIR / "SYN_0000004.png", synthetic / "images" / "SYN_0000004.png")
    write_metadata(synthetic / "metadata.csv", [{**dict.fromkeys(ISIC2020_COLUMNS + EXTRA_COLUMNS, ""),
                                                 "image_name": f"SYN_{n:07d}"} for n in range(1, 6)])
    assert drop_memorized(synthetic, train).moved == ["SYN_0000004.png"]
    assert (synthetic / MEMORIZED_CSV).read_text() == listed
    assert [r["image_name"] for r in read_synthetic_metadata(synthetic / "metadata.csv")] == \
        ["SYN_0000001", "SYN_0000003", "SYN_0000005"]


def test_a_dataset_without_training_images_is_refused_naming_its_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(MedsynthError, match=rf"^{re.escape(str(tmp_path / 'train'))}: no training images"):
        training_folder(tmp_path)
