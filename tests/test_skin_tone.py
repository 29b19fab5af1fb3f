"""Skin tone: ITA of the skin ring around the lesion after colour constancy, Chardon's bands, when the ITA is
unreliable, the metadata's Fitzpatrick type, and `medsynth dataset build --skin-tone`."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections import Counter
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
from orchestrator.vision.skin_tone import (BAND_NAMES, ITA_ALGORITHM, ToneEstimate, estimate_tone, resolve_tone,
                                          skin_ita, tone_band)


GLINT = (230, 230, 230)   # a specular glint, brighter than any test skin, that the test's cast does not saturate
BLUE_CAST = (1.1, 1.0, 0.7)   # BGR gains of a bluish dermatoscope light


def bgr_of_lab(lightness: float, a: float, b: float) -> tuple[int, int, int]:
    """The 8-bit BGR colour of a CIE L*a*b* value."""
    lab = np.array([[[lightness, a, b]]], np.float32)
    bgr = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)[0, 0]
    return tuple(int(round(float(v) * 255)) for v in np.clip(bgr, 0, 1))  # type: ignore[return-value]


def skin_with_lesion(lightness: float, b: float, size: int = ANALYSIS_SIZE, glint=GLINT,
                     cast=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Uniform skin, a dark lesion in the middle and, beyond the measured ring, an annulus of glints (~6 % of
    the view: the reflections of the dermatoscope's light the illuminant is estimated from), under a cast."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = bgr_of_lab(lightness, 8.0, b)
    cv2.circle(image, (size // 2, size // 2), size // 6, (10, 10, 40), -1)  # a dark brown lesion
    if glint is not None:
        cv2.circle(image, (size // 2, size // 2), round(size * 0.43), glint, round(size * 0.02))
    return np.clip(image * np.array(cast), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("ita,band", [
    (70, "very light"), (55.01, "very light"), (55, "light"), (41, "light"), (40.9, "intermediate"),
    (28, "intermediate"), (27.9, "tan"), (10, "tan"), (9.9, "brown"), (-30, "brown"), (-30.1, "dark"), (-80, "dark"),
])
def test_chardon_bands_and_their_boundaries(ita, band):
    assert tone_band(ita) == band


def test_band_names_run_from_very_light_to_dark():
    assert BAND_NAMES == ("very light", "light", "intermediate", "tan", "brown", "dark")


TONES = [(75, 12, "very light"), (68, 18, "light"), (62, 18, "intermediate"), (56, 20, "tan"), (45, 22, "brown"),
         (30, 12, "dark")]


@pytest.mark.parametrize("lightness,b,band", TONES)
def test_ita_of_uniform_skin_around_a_lesion_matches_its_lab_colour(lightness, b, band):
    expected = math.degrees(math.atan((lightness - 50) / b))
    tone = estimate_tone(skin_with_lesion(lightness, b))
    assert tone.ita == pytest.approx(expected, abs=1.5)
    assert (tone.band, tone.reliable, tone.reason) == (band, True, None)


@pytest.mark.parametrize("lightness,b,band", TONES[:5])
def test_under_a_blue_cast_the_corrected_skin_keeps_the_band_of_its_uncast_colour(lightness, b, band):
    cast = skin_with_lesion(lightness, b, cast=BLUE_CAST)
    uncast_ita = math.degrees(math.atan((lightness - 50) / b))
    assert abs(estimate_tone(cast, reference="none").ita - uncast_ita) > 3   # uncorrected, the cast moves it
    tone = estimate_tone(cast)
    assert tone.ita == pytest.approx(uncast_ita, abs=1.5)
    assert tone.band == band


def test_skin_without_yellowness_is_unreliable_not_very_light():
    tone = estimate_tone(skin_with_lesion(80, 0.5))
    assert (tone.band, tone.reliable) == (None, False)
    assert tone.reason.startswith("skin b* ") and "too near neutral" in tone.reason
    assert tone.ita > 80   # still reported, for the record


def test_a_cast_too_strong_to_correct_is_unreliable():
    tone = estimate_tone(skin_with_lesion(62, 18, glint=(220, 120, 60)))
    assert not tone.reliable and tone.reason.startswith("colour cast too strong")


def test_an_image_that_is_almost_all_lesion_is_unreliable():
    image = skin_with_lesion(62, 18, glint=None)
    cv2.circle(image, (256, 256), 350, (10, 10, 40), -1)
    tone = estimate_tone(image)
    assert not tone.reliable and tone.band is None and "skin" in tone.reason


def test_lesion_pixels_do_not_count_towards_the_skin_tone():
    small_lesion, big_lesion = skin_with_lesion(70, 15), skin_with_lesion(70, 15)
    cv2.circle(big_lesion, (256, 256), 150, (10, 10, 40), -1)
    assert skin_ita(small_lesion) == pytest.approx(skin_ita(big_lesion), abs=1.0)


def test_dark_vignette_does_not_darken_the_skin_tone():
    image = skin_with_lesion(70, 15)
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(inside, (256, 256), 250, 1, -1)
    image[inside == 0] = (3, 3, 3)
    assert skin_ita(image) == pytest.approx(math.degrees(math.atan(20 / 15)), abs=1.5)


def test_only_the_ring_near_the_lesion_is_measured():
    image = skin_with_lesion(70, 15, glint=None)
    far = np.ones(image.shape[:2], bool)
    cv2.circle(far.view(np.uint8), (256, 256), 150, 0, -1)
    image[far] = bgr_of_lab(58, 8, 20)  # tan skin (ITA 22) beyond the ring
    cv2.circle(image, (256, 256), 220, GLINT, 10)
    assert skin_ita(image) == pytest.approx(math.degrees(math.atan(20 / 15)), abs=1.5)


def test_a_cached_estimate_is_restored_with_its_band_or_its_reason():
    assert ToneEstimate.restore(33.7, None) == ToneEstimate(33.7, "intermediate", True, None)
    assert ToneEstimate.restore(88.0, "skin b* 0.4 < 2.3") == ToneEstimate(88.0, None, False, "skin b* 0.4 < 2.3")


def test_metadata_fitzpatrick_wins_over_the_ita():
    reliable, unreliable = ToneEstimate(70.0, "very light", True, None), ToneEstimate(88.0, None, False, "why")
    assert resolve_tone("V", reliable) == ("brown", "metadata", "")
    assert resolve_tone(None, reliable) == ("very light", "ita", "")
    assert resolve_tone(None, unreliable) == ("", "ita", "why")
    assert resolve_tone("I", None) == ("very light", "metadata", "")


@pytest.fixture(scope="module")
def demo_tones() -> dict[str, ToneEstimate]:
    return {p.stem: estimate_tone(cv2.imread(str(p))) for p in sorted((DEMO_DIR / "images").glob("*.jpg"))}


def test_demo_images_no_longer_all_read_very_light(demo_tones):
    """bench/skin_tone_calibration.py: with the brightest-pixel illuminant, 20 of the 40 demo images have
    skin b* above one just-noticeable difference (19 very light, ISIC_0000070 light); the other 20 stay too
    near neutral for an angle and say so, where the uncorrected ITA read 38 of them as "very light" at 90."""
    bands = Counter(t.band if t.reliable else "unreliable" for t in demo_tones.values())
    assert bands == {"very light": 19, "light": 1, "unreliable": 20}
    assert all(t.reason.startswith("skin b*") for t in demo_tones.values() if not t.reliable)
    assert all(-90 <= t.ita < 90 for t in demo_tones.values() if t.reliable)


def test_demo_estimates_are_deterministic(demo_tones):
    for name in list(demo_tones)[::8]:
        assert estimate_tone(cv2.imread(str(DEMO_DIR / "images" / f"{name}.jpg"))) == demo_tones[name]


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


def test_skin_tone_build_stores_the_ita_and_its_band_or_why_it_has_none(toned):
    rows = manifest(toned)
    assert len(rows) == 20
    for row in rows:
        assert -90 <= float(row["ita"]) <= 90
        assert row["skin_tone_source"] == "ita", row["image_id"]
        if row["skin_tone"]:
            assert (row["skin_tone"], row["skin_tone_reason"]) == (tone_band(float(row["ita"])), ""), row["image_id"]
        else:
            assert row["skin_tone_reason"].startswith("skin b*"), row["image_id"]
    assert {bool(r["skin_tone"]) for r in rows} == {True, False}   # demo melanomas: some banded, some not


def test_metadata_fitzpatrick_gives_the_build_its_skin_tone(tmp_path):
    """An ISIC Archive export with fitzpatrick_skin_type: those rows take the band from it, the rest from the ITA."""
    with (DEMO_DIR / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    types = {"ISIC_0000002": "IV", "ISIC_0000004": "VI"}
    export = tmp_path / "export.csv"
    with export.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "fitzpatrick_skin_type"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "fitzpatrick_skin_type": types.get(r["isic_id"], "")} for r in rows)
    out = manifest(build(tmp_path, csv=(export,), skin_tone=True))
    by_id = {r["image_id"]: r for r in out}
    assert [(by_id[i]["fitzpatrick"], by_id[i]["skin_tone"], by_id[i]["skin_tone_source"]) for i in types] == [
        ("IV", "tan", "metadata"), ("VI", "dark", "metadata")]
    assert {r["skin_tone_source"] for i, r in by_id.items() if i not in types} == {"ita"}
    report = (tmp_path / "ds" / "report.txt").read_text()
    assert re.search(r"\(of these from metadata\) +2\n", report)


def test_skin_tone_ita_is_the_one_measured_on_the_image(toned):
    row = manifest(toned)[0]
    image = cv2.imread(str(DEMO_DIR / "images" / f"{row['image_id']}.jpg"))
    assert float(row["ita"]) == pytest.approx(skin_ita(image), abs=1.0)  # the build measures a reduced decode


def test_report_counts_images_per_tone_band_unreliable_and_from_metadata(toned):
    report = (toned / "report.txt").read_text()
    section = report.split("skin tone:\n", 1)[1].splitlines()[:len(BAND_NAMES) + 2]
    counts = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1]) for line in section}
    assert list(counts) == [*BAND_NAMES, "unreliable", "(of these from metadata)"]
    rows = manifest(toned)
    assert counts == {**{band: sum(r["skin_tone"] == band for r in rows) for band in BAND_NAMES},
                      "unreliable": sum(not r["skin_tone"] for r in rows), "(of these from metadata)": 0}
    assert counts["unreliable"] > 0


def test_default_captions_do_not_change_with_skin_tone(toned, tmp_path):
    plain = build(tmp_path)
    assert [r["caption"] for r in manifest(plain)] == [r["caption"] for r in manifest(toned)]
    assert {r["ita"] for r in manifest(plain)} == {""} == {r["skin_tone"] for r in manifest(plain)}
    assert "skin tone" not in (plain / "report.txt").read_text()


def test_a_caption_template_can_use_the_skin_tone(tmp_path):
    template = tmp_path / "tone.j2"
    template.write_text("photo of {% if skin_tone %}{{ skin_tone }} {% endif %}skin, {{ trigger }}")
    toned_rows = manifest(build(tmp_path, "a", skin_tone=True, caption_template=template))
    assert all(r["caption"] == (f"photo of {r['skin_tone']} skin, me1anoma" if r["skin_tone"]
                                else "photo of skin, me1anoma") for r in toned_rows)
    plain_rows = manifest(build(tmp_path, "b", caption_template=template))
    assert {r["caption"] for r in plain_rows} == {"photo of skin, me1anoma"}


def test_rebuild_with_skin_tone_is_byte_identical_and_measures_nothing_again(toned, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    shutil.copytree(toned, out)
    shutil.copy(toned.parent / CACHE_NAME, tmp_path / CACHE_NAME)
    before = (out / "manifest.csv").read_bytes()

    def never(*_args, **_kwargs):
        raise AssertionError("skin tone measured again although cached")

    monkeypatch.setattr(images_module, "estimate_tone", never)
    build(tmp_path, skin_tone=True)
    assert (out / "manifest.csv").read_bytes() == before


def test_cache_from_a_build_without_tone_gains_the_ita(tmp_path):
    build(tmp_path)
    cache = json.loads((tmp_path / CACHE_NAME).read_text())
    assert {len(entry) for entry in cache["images"].values()} == {3}
    build(tmp_path, skin_tone=True)
    cache = json.loads((tmp_path / CACHE_NAME).read_text())
    assert {len(entry) for entry in cache["images"].values()} == {5}
    assert cache["ita_algorithm"] == ITA_ALGORITHM


def test_cached_itas_of_another_version_are_measured_again(toned, tmp_path):
    shutil.copy(toned.parent / CACHE_NAME, tmp_path / CACHE_NAME)
    stale = json.loads((tmp_path / CACHE_NAME).read_text())
    stale["ita_algorithm"] = "ring-median/v1/analysis512"
    for entry in stale["images"].values():
        entry[3:] = [-89.0]  # version 1's entry, an ITA without a reason: would read as "dark" if it were used
    (tmp_path / CACHE_NAME).write_text(json.dumps(stale))
    rows = manifest(build(tmp_path, skin_tone=True))
    assert [r["ita"] for r in rows] == [r["ita"] for r in manifest(toned)]


def test_skin_tone_option_reaches_the_build_from_the_command_line(tmp_path):
    result = CliRunner().invoke(main, ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images",
                                       str(DEMO_DIR / "images"), "--out", str(tmp_path / "ds"), "--resolution",
                                       "256", "--workers", "1", "--quiet", "--skin-tone"])
    assert result.exit_code == 0, result.output
    assert "skin tone:" in result.output
    assert all(r["skin_tone"] or r["skin_tone_reason"] for r in manifest(tmp_path / "ds"))
