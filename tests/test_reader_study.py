"""The reader-study page: the seeded mix, what the page must not reveal, the exact binomial test, and the page
itself driven in headless Chromium (clicks and keys, scores, CSV export, localStorage per study)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from generate_helpers import png_with_text
from orchestrator.cli.reader_study import reader_study as reader_study_command
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import DEMO_DIR
from orchestrator.dataset.record import DatasetRecord, write_record
from orchestrator.evaluate.reader_study import (REAL, SYNTHETIC, binomial_two_sided, build_study, decode, image_files, pick,
                                       write_study)

SECRET = "photo of female skin, me1anoma on torso, at age 50"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """REAL: the 40 CC0 demo photographs (4:3 JPEGs); SYNTH: 30 square PNGs carrying a prompt in a text chunk."""
    synth = tmp_path_factory.mktemp("synthetic") / "synthetic"
    (synth / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 31):
        pixels = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        # as sd-scripts writes them: the prompt and seed in tEXt chunks, which the page must not carry
        (synth / "images" / f"SYN_{i:07d}.png").write_bytes(png_with_text(96, 96, {"prompt": SECRET, "seed": str(i)},
                                                                          pixels))
    return DEMO_DIR / "images", synth


def _truths(study) -> list[int]:
    return [item.truth for item in study.items]


def _data(study) -> dict:
    found = re.search(r'<script type="application/json" id="study-data">(.*?)</script>', study.html, re.S)
    return json.loads(found.group(1))


# ----------------------------------------------------------------------------------------------- the mix

def test_the_mix_is_half_real_half_synthetic_without_repeats(folders):
    real, synth = folders
    items = pick(image_files(real), image_files(synth), 21, seed=1)
    assert sum(i.truth == REAL for i in items) == 10 and sum(i.truth == SYNTHETIC for i in items) == 11
    assert len({i.path for i in items}) == 21


def test_the_same_seed_gives_the_same_order_and_another_seed_another(folders):
    real, synth = folders
    a, b = (pick(image_files(real), image_files(synth), 20, seed=s) for s in (5, 5))
    assert a == b
    assert pick(image_files(real), image_files(synth), 20, seed=6) != a


def test_the_order_is_shuffled_not_grouped(folders):
    items = pick(image_files(folders[0]), image_files(folders[1]), 40, seed=2)
    truths = [i.truth for i in items]
    assert truths != sorted(truths) and truths != sorted(truths, reverse=True)


def test_too_few_images_of_one_kind_is_an_error_naming_the_kind(folders):
    with pytest.raises(MedsynthError, match="needs 25 synthetic images, the synthetic folder has 10"):
        pick(image_files(folders[0]), image_files(folders[1])[:10], 50, seed=0)


def test_the_same_folder_as_real_and_synthetic_is_refused(folders):
    with pytest.raises(MedsynthError, match="in both the real and the synthetic images"):
        pick(image_files(folders[1]), image_files(folders[1]), 10, seed=0)


def test_image_files_finds_a_datasets_image_folder_and_a_synthetic_images_folder(folders, tmp_path):
    ds = tmp_path / "ds"
    (ds / "train" / "1_melanoma").mkdir(parents=True)
    cv2.imwrite(str(ds / "train" / "1_melanoma" / "ISIC_1.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(ds / "report.png"), np.zeros((8, 8, 3), np.uint8))
    write_record(ds, DatasetRecord(class_name="melanoma", repeats=1, resolution=1024, image_dir="train/1_melanoma",
                                   images=1, skipped=0, trigger="me1anoma", caption_extension=".caption",
                                   manifest_sha256=""))
    assert image_files(ds) == [ds / "train" / "1_melanoma" / "ISIC_1.jpg"]
    assert len(image_files(folders[1])) == 30
    with pytest.raises(MedsynthError, match="no .jpg/.jpeg/.png images"):
        image_files(tmp_path / "ds" / "train")


def test_a_folder_holding_synthetic_gives_its_images_not_its_own_pngs(folders, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cv2.imwrite(str(run / "contact_sheet.png"), np.zeros((8, 8, 3), np.uint8))
    (run / "synthetic").symlink_to(folders[1])
    assert image_files(run) == [run / "synthetic" / "images" / p.name for p in image_files(folders[1])]


# ----------------------------------------------------------------------------------------------- what the page holds

def test_tokens_decode_to_the_truth_but_their_low_bit_alone_does_not(folders):
    study = build_study(*folders, n=40, seed=3, size=64)
    data = _data(study)
    assert [decode(t, data["id"], i) for i, t in enumerate(data["tokens"])] == _truths(study)
    assert [t & 1 for t in data["tokens"]] != _truths(study)


def test_the_page_names_no_file_and_carries_no_prompt_or_label(folders):
    study = build_study(*folders, n=40, seed=3, size=64)
    for item in study.items:
        assert item.path.name not in study.html and item.path.stem not in study.html
    assert SECRET not in study.html and "me1anoma" not in study.html
    assert 'alt="synthetic' not in study.html.lower() and "truth" not in json.dumps(_data(study))


def test_every_image_is_the_same_size_jpeg_whatever_its_source(folders):
    study = build_study(*folders, n=10, seed=0, size=128)
    for uri in _data(study)["images"]:
        assert uri.startswith("data:image/jpeg;base64,")
        image = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (128, 128, 3)


def test_two_studies_of_other_images_have_other_ids(folders):
    assert build_study(*folders, n=10, seed=0, size=32).id != build_study(*folders, n=10, seed=1, size=32).id


def test_a_40_image_page_stays_small(folders):
    study = build_study(*folders, n=40, seed=0)
    assert len(study.html.encode()) < 6_000_000


# ----------------------------------------------------------------------------------------------- the binomial test

def _exact_half(k: int, n: int) -> float:
    """For p = 0.5 the two-sided exact p-value is 2 * the smaller tail (exact rational arithmetic)."""
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1))
    return min(1.0, 2 * tail / 2**n)


@pytest.mark.parametrize("k, n", [(3, 10), (5, 10), (0, 10), (10, 10), (27, 40), (20, 40), (13, 40), (70, 100)])
def test_binomial_p_value_matches_exact_arithmetic(k, n):
    assert binomial_two_sided(k, n) == pytest.approx(_exact_half(k, n), rel=1e-9)


def test_binomial_p_value_with_an_uneven_null_counts_outcomes_no_more_likely():
    # R: binom.test(2, 10, 0.3)$p.value == 1 (every outcome with probability <= P(X=2) ... is all but 3)
    pmf = [math.comb(10, i) * 0.3**i * 0.7**(10 - i) for i in range(11)]
    assert binomial_two_sided(2, 10, 0.3) == pytest.approx(sum(p for p in pmf if p <= pmf[2] * (1 + 1e-7)))


# ----------------------------------------------------------------------------------------------- in Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not on PATH (apt-get install chromium)")


DRIVER = "<script>window.addEventListener('load', function () {"


def _driven(page: Path, script: str) -> Path:
    """A copy of the page (driven-<name>) that runs `script` once it has loaded."""
    driven = page.with_name("driven-" + page.name)
    driven.write_text(page.read_text(encoding="utf-8").replace("</body>", f"{DRIVER} {script} }});</script></body>"),
                      encoding="utf-8")
    return driven


def _dom(page: Path, profile: Path, script: str = "") -> str:
    """The DOM of the last page loaded, after `script` ran on load of `page`, from one headless Chromium process
    with the given profile (Chromium dumps once virtual time is idle, which waits for a navigation it started)."""
    if script:
        page = _driven(page, script)
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _answer_script(labels: list[str]) -> str:
    """Odd items by clicking the buttons, even items by the R / S keys."""
    return (f"var labels = {json.dumps(labels)}; labels.forEach(function (l, i) {{ if (i % 2) "
            f"document.getElementById(l).click(); else document.dispatchEvent(new KeyboardEvent('keydown', "
            f"{{key: l === 'real' ? 'r' : 'S'}})); }});")


def _scores(dom: str) -> dict[str, float]:
    tag = re.search(r'<table id="scores"([^>]*)>', dom).group(1)
    return {k: float(v) for k, v in re.findall(r'data-(\w+)="([^"]*)"', tag)}


@needs_chromium
def test_the_page_scores_the_answers_as_python_does(folders, tmp_path):
    study = build_study(*folders, n=24, seed=7, size=64)
    page = tmp_path / "study.html"
    write_study(study, page)
    truths = _truths(study)
    rng = np.random.default_rng(1)  # a reader who is right about 70 % of the time
    labels = [("synthetic" if t == SYNTHETIC else "real") if rng.random() < 0.7 else
              ("real" if t == SYNTHETIC else "synthetic") for t in truths]
    dom = _dom(page, tmp_path / "profile", _answer_script(labels))
    scores = _scores(dom)
    correct = sum((lab == "synthetic") == (t == SYNTHETIC) for lab, t in zip(labels, truths))
    synth = [lab for lab, t in zip(labels, truths) if t == SYNTHETIC]
    real = [lab for lab, t in zip(labels, truths) if t == REAL]
    assert scores["n"] == 24 and scores["correct"] == correct
    assert scores["accuracy"] == pytest.approx(correct / 24)
    assert scores["sensitivity"] == pytest.approx(synth.count("synthetic") / len(synth))
    assert scores["specificity"] == pytest.approx(real.count("real") / len(real))
    assert scores["p"] == pytest.approx(binomial_two_sided(correct, 24), rel=1e-9)
    assert re.search(r'<section id="trial" hidden', dom)


@needs_chromium
def test_the_csv_export_holds_every_answer_and_the_truth_once_finished(folders, tmp_path):
    study = build_study(*folders, n=10, seed=2, size=32)
    page = tmp_path / "study.html"
    write_study(study, page)
    labels = ["real", "synthetic"] * 5
    dom = _dom(page, tmp_path / "profile", _answer_script(labels))
    href = html.unescape(re.search(r'<a id="download" href="([^"]*)"', dom).group(1))
    assert href.startswith("data:text/csv;charset=utf-8,")
    from urllib.parse import unquote

    rows = list(csv.DictReader(io.StringIO(unquote(href.split(",", 1)[1]))))
    assert [r["answer"] for r in rows] == labels and {r["study_id"] for r in rows} == {study.id}
    assert [r["truth"] for r in rows] == ["synthetic" if t == SYNTHETIC else "real" for t in _truths(study)]
    assert all(r["correct"] == str(int(r["answer"] == r["truth"])) for r in rows)


def _seeded(page: Path, entries: dict[str, str], name: str) -> Path:
    """A copy of the page whose localStorage holds `entries` before the page's own script runs: what a reload, or
    another study opened later, finds in the browser's storage."""
    seeded = page.with_name(name)
    seed = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in entries.items())
    seeded.write_text(page.read_text(encoding="utf-8").replace("<head>", f"<head><script>{seed}</script>", 1),
                      encoding="utf-8")
    return seeded


@needs_chromium
def test_answers_survive_a_reload_and_two_studies_do_not_mix(folders, tmp_path):
    # Each check is one document in one Chromium process. A real reload reads localStorage from another renderer,
    # which sees the first one's writes only once Chromium has committed them, later under load: the browser's
    # part, not the page's. So the page's part is checked on its own: every answer is in localStorage at once,
    # and a page opened on that storage continues where the reader stopped.
    first, second = (build_study(*folders, n=10, seed=s, size=32) for s in (4, 5))
    page1, page2 = tmp_path / "one.html", tmp_path / "two.html"
    write_study(first, page1)
    write_study(second, page2)
    four = _answer_script(["real", "synthetic", "real", "real"])
    dumped = _dom(page1, tmp_path / "profile1",
                  f"{four} document.body.dataset.saved = JSON.stringify(Object.assign({{}}, localStorage));")
    saved = json.loads(html.unescape(re.search(r'data-saved="([^"]*)"', dumped).group(1)))
    assert len(saved) == 1 and json.loads(next(iter(saved.values())))["answers"][:5] == \
        ["real", "synthetic", "real", "real", None]               # saved with the fourth answer, before any unload
    reloaded = _dom(_seeded(page1, saved, "reloaded.html"), tmp_path / "profile2")
    assert "Image 5 of 10" in reloaded                            # it continues where the reader stopped
    other = _dom(_seeded(page2, saved, "other.html"), tmp_path / "profile3",
                 "document.body.dataset.stored = String(localStorage.length);")
    assert "Image 1 of 10" in other                               # another study starts at its own beginning ...
    assert 'data-stored="1"' in other                             # ... and leaves the first study's answers alone


@needs_chromium
def test_the_b_key_goes_back_one_image(folders, tmp_path):
    study = build_study(*folders, n=10, seed=4, size=32)
    page = tmp_path / "study.html"
    write_study(study, page)
    script = _answer_script(["real", "real", "synthetic"]) + \
        " document.dispatchEvent(new KeyboardEvent('keydown', {key: 'b'}));"
    assert "Image 3 of 10" in _dom(page, tmp_path / "profile", script)


# ----------------------------------------------------------------------------------------------- the CLI

def test_cli_writes_one_page_and_prints_a_summary(folders, tmp_path):
    out = tmp_path / "study.html"
    result = CliRunner().invoke(reader_study_command, [str(folders[0]), str(folders[1]), "--n", "12", "--seed", "3",
                                                       "--out", str(out), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "12 images (6 real, 6 synthetic)" in result.output
    assert build_study(*folders, n=12, seed=3, size=64).html == out.read_text(encoding="utf-8")


def test_cli_reports_a_missing_folder_on_one_line(tmp_path, folders):
    result = CliRunner().invoke(reader_study_command, [str(folders[0]), str(tmp_path / "none"), "--n", "4"])
    assert result.exit_code != 0 and "none" in result.output
