"""The memorization screen (orchestrator/evaluate/memorization.py): planted copies of the 40 CC0 demo images,
re-encoded, resized, flipped, rotated, noised or cropped, are flagged with their source; distinct demo lesions are not
(leave-one-out, the threshold calibrated without the image screened); and `medsynth evaluate` records the screen
in evaluation.json and shows a flagged pair on its page."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import DEMO_DIR
from orchestrator.evaluate.features import embeddings, image_set
from orchestrator.evaluate.memorization import MIN_REAL, calibrate, embed, screen, similarity_matrix
from orchestrator.evaluate.record import RECORD_NAME, read_evaluation_record

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
