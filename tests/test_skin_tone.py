"""Skin tone: ITA of the skin ring around the lesion, Chardon's bands, and `medsynth dataset build --skin-tone`."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from orchestrator.dataset import images as images_module
from orchestrator.cli.main import main
from orchestrator.dataset.settings import DatasetSettings
from orchestrator.dataset.build import CACHE_NAME, build_dataset
from orchestrator.common.paths import DEMO_DIR
from orchestrator.vision.lesion import ANALYSIS_SIZE
from orchestrator.vision.skin_tone import BAND_NAMES, ITA_ALGORITHM, skin_ita, tone_band


def bgr_of_lab(lightness: float, a: float, b: float) -> tuple[int, int, int]:
    """The 8-bit BGR colour of a CIE L*a*b* value."""
    lab = np.array([[[lightness, a, b]]], np.float32)
    bgr = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)[0, 0]
    return tuple(int(round(float(v) * 255)) for v in np.clip(bgr, 0, 1))  # type: ignore[return-value]


def skin_with_lesion(lightness: float, b: float, size: int = ANALYSIS_SIZE) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = bgr_of_lab(lightness, 8.0, b)
    cv2.circle(image, (size // 2, size // 2), size // 6, (10, 10, 40), -1)  # a dark brown lesion
    return image


@pytest.mark.parametrize("ita,band", [
    (70, "very light"), (55.01, "very light"), (55, "light"), (41, "light"), (40.9, "intermediate"),
    (28, "intermediate"), (27.9, "tan"), (10, "tan"), (9.9, "brown"), (-30, "brown"), (-30.1, "dark"), (-80, "dark"),
])
def test_chardon_bands_and_their_boundaries(ita, band):
    assert tone_band(ita) == band


def test_band_names_run_from_very_light_to_dark():
    assert BAND_NAMES == ("very light", "light", "intermediate", "tan", "brown", "dark")


@pytest.mark.parametrize("lightness,b,band", [(75, 12, "very light"), (68, 18, "light"), (62, 18, "intermediate"),
                                               (56, 20, "tan"), (45, 22, "brown"), (30, 12, "dark")])
def test_ita_of_uniform_skin_around_a_lesion_matches_its_lab_colour(lightness, b, band):
    expected = math.degrees(math.atan((lightness - 50) / b))
    measured = skin_ita(skin_with_lesion(lightness, b))
    assert measured == pytest.approx(expected, abs=1.5)
    assert tone_band(measured) == band


def test_lesion_pixels_do_not_count_towards_the_skin_tone():
    small_lesion, big_lesion = skin_with_lesion(70, 15), skin_with_lesion(70, 15)
    cv2.circle(big_lesion, (256, 256), 170, (10, 10, 40), -1)
    assert skin_ita(small_lesion) == pytest.approx(skin_ita(big_lesion), abs=1.0)


def test_dark_vignette_does_not_darken_the_skin_tone():
    image = skin_with_lesion(70, 15)
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(inside, (256, 256), 235, 1, -1)
    image[inside == 0] = (3, 3, 3)
    assert skin_ita(image) == pytest.approx(math.degrees(math.atan(20 / 15)), abs=1.5)


def test_only_the_ring_near_the_lesion_is_measured():
    image = skin_with_lesion(70, 15)
    far = np.ones(image.shape[:2], bool)
    cv2.circle(far.view(np.uint8), (256, 256), 150, 0, -1)
    image[far] = bgr_of_lab(58, 8, 20)  # tan skin (ITA 22) beyond the ring
    assert skin_ita(image) == pytest.approx(math.degrees(math.atan(20 / 15)), abs=1.5)


def test_blue_cast_skin_reads_as_at_most_90_degrees():
    image = skin_with_lesion(80, -6)
    assert skin_ita(image) == 90.0


def test_demo_images_have_a_deterministic_ita_in_range():
    for path in sorted((DEMO_DIR / "images").glob("*.jpg"))[::5]:
        image = cv2.imread(str(path))
        value = skin_ita(image)
        assert value is not None and -90 <= value <= 90
        assert skin_ita(image) == value


# ---- medsynth dataset build --skin-tone ----

def build(tmp_path: Path, name: str = "ds", **over) -> Path:
    settings = dict(csv=(DEMO_DIR / "metadata.csv",), images=(DEMO_DIR / "images",), out=tmp_path / name,
                    workers=1, resolution=512)
    settings.update(over)
    build_dataset(DatasetSettings(**settings), progress=False)
    return tmp_path / name


def manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def toned(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("toned"), skin_tone=True)


def test_skin_tone_build_stores_ita_and_its_band_for_every_image(toned):
    rows = manifest(toned)
    assert len(rows) == 20
    for row in rows:
        assert row["skin_tone"] == tone_band(float(row["ita"])), row["image_id"]
        assert -90 <= float(row["ita"]) <= 90


def test_skin_tone_ita_is_the_one_measured_on_the_image(toned):
    row = manifest(toned)[0]
    image = cv2.imread(str(DEMO_DIR / "images" / f"{row['image_id']}.jpg"))
    assert float(row["ita"]) == pytest.approx(skin_ita(image), abs=1.0)  # the build measures a reduced decode


def test_report_counts_images_per_tone_band(toned):
    report = (toned / "report.txt").read_text()
    section = report.split("skin tone:\n", 1)[1].splitlines()[:len(BAND_NAMES)]
    counts = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1]) for line in section}
    assert list(counts) == list(BAND_NAMES)
    assert counts == {band: sum(r["skin_tone"] == band for r in manifest(toned)) for band in BAND_NAMES}


def test_default_captions_do_not_change_with_skin_tone(toned, tmp_path):
    plain = build(tmp_path)
    assert [r["caption"] for r in manifest(plain)] == [r["caption"] for r in manifest(toned)]
    assert {r["ita"] for r in manifest(plain)} == {""} == {r["skin_tone"] for r in manifest(plain)}
    assert "skin tone" not in (plain / "report.txt").read_text()


def test_a_caption_template_can_use_the_skin_tone(tmp_path):
    template = tmp_path / "tone.j2"
    template.write_text("photo of {% if skin_tone %}{{ skin_tone }} {% endif %}skin, {{ trigger }}")
    toned_rows = manifest(build(tmp_path, "a", skin_tone=True, caption_template=template))
    assert all(r["caption"] == f"photo of {r['skin_tone']} skin, me1anoma" for r in toned_rows)
    plain_rows = manifest(build(tmp_path, "b", caption_template=template))
    assert {r["caption"] for r in plain_rows} == {"photo of skin, me1anoma"}


def test_rebuild_with_skin_tone_is_byte_identical_and_measures_nothing_again(toned, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    shutil.copytree(toned, out)
    shutil.copy(toned.parent / CACHE_NAME, tmp_path / CACHE_NAME)
    before = (out / "manifest.csv").read_bytes()

    def never(*_args, **_kwargs):
        raise AssertionError("skin tone measured again although cached")

    monkeypatch.setattr(images_module, "skin_ita", never)
    build(tmp_path, skin_tone=True)
    assert (out / "manifest.csv").read_bytes() == before


def test_cache_from_a_build_without_tone_gains_the_ita(tmp_path):
    build(tmp_path)
    cache = json.loads((tmp_path / CACHE_NAME).read_text())
    assert {len(entry) for entry in cache["images"].values()} == {3}
    build(tmp_path, skin_tone=True)
    cache = json.loads((tmp_path / CACHE_NAME).read_text())
    assert {len(entry) for entry in cache["images"].values()} == {4}
    assert cache["ita_algorithm"] == ITA_ALGORITHM


def test_cached_itas_of_another_version_are_measured_again(toned, tmp_path):
    shutil.copy(toned.parent / CACHE_NAME, tmp_path / CACHE_NAME)
    stale = json.loads((tmp_path / CACHE_NAME).read_text())
    stale["ita_algorithm"] = "older"
    for entry in stale["images"].values():
        entry[3] = -89.0  # would read as "dark" if it were used
    (tmp_path / CACHE_NAME).write_text(json.dumps(stale))
    rows = manifest(build(tmp_path, skin_tone=True))
    assert [r["ita"] for r in rows] == [r["ita"] for r in manifest(toned)]


def test_skin_tone_option_reaches_the_build_from_the_command_line(tmp_path):
    result = CliRunner().invoke(main, ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images",
                                       str(DEMO_DIR / "images"), "--out", str(tmp_path / "ds"), "--resolution",
                                       "256", "--workers", "1", "--quiet", "--skin-tone"])
    assert result.exit_code == 0, result.output
    assert "skin tone:" in result.output
    assert all(r["skin_tone"] for r in manifest(tmp_path / "ds"))
