"""`medsynth evaluate`: image sets in their three forms, the KS statistic, the 20 CC0 melanomas vs the 20 CC0
nevi through the CLI, a run's samples per epoch, and bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.common.errors import MedsynthError
from orchestrator.evaluate.features import FEATURES, analyse, image_set, kolmogorov_survival, ks_two_sample
from orchestrator.evaluate.record import read_evaluation_record
from orchestrator.common.paths import DEMO_DIR

DEMO_IMAGES = DEMO_DIR / "images"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def demo_ids(diagnosis: str) -> list[str]:
    with (DEMO_DIR / "metadata.csv").open(newline="") as fh:
        return [row["isic_id"] for row in csv.DictReader(fh) if row["diagnosis"] == diagnosis]


def linked(folder: Path, ids: list[str]) -> Path:
    folder.mkdir(parents=True)
    for image_id in ids:
        os.link(DEMO_IMAGES / f"{image_id}.jpg", folder / f"{image_id}.jpg")
    return folder


@pytest.fixture(scope="module")
def demo_sets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("demo_sets")
    return linked(root / "melanoma", demo_ids("melanoma")), linked(root / "nevus", demo_ids("nevus"))


@pytest.fixture(scope="module")
def melanoma_vs_nevus(demo_sets, tmp_path_factory) -> tuple[dict, Path, str]:
    melanoma, nevus = demo_sets
    out = tmp_path_factory.mktemp("evaluation")
    result = CliRunner().invoke(main, ["evaluate", str(melanoma), str(nevus), "--out", str(out), "--quiet",
                                       "--workers", "2"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "evaluation.json").read_text()), out, result.output


# ---- the demo melanomas vs nevi ----

def test_demo_melanoma_vs_nevus_reports_every_feature_for_all_40_images(melanoma_vs_nevus):
    summary, out, output = melanoma_vs_nevus
    assert (summary["sets"]["real"]["images"], summary["sets"]["synthetic"]["images"]) == (20, 20)
    assert [row["key"] for row in summary["features"]] == [f.key for f in FEATURES]
    for row in summary["features"]:
        assert row["real"]["n"] == 20 and row["synthetic"]["n"] == 20, row["key"]
        assert 0 <= row["ks"] <= 1 and 0 <= row["p_value"] <= 1, row["key"]
        assert row["key"] in output
    assert summary["sets"]["real"]["no_lesion_found"] == [] == summary["sets"]["synthetic"]["no_lesion_found"]


def test_demo_melanomas_score_higher_than_nevi_on_border_colours_and_tds(melanoma_vs_nevus):
    summary, _, _ = melanoma_vs_nevus
    rows = {row["key"]: row for row in summary["features"]}
    for key in ("border", "colours", "tds", "asymmetry_index"):
        assert rows[key]["real"]["mean"] > rows[key]["synthetic"]["mean"], key  # REAL = melanoma here
        assert rows[key]["mean_difference"] == pytest.approx(
            rows[key]["synthetic"]["mean"] - rows[key]["real"]["mean"], abs=1e-3)
    assert rows["tds"]["ks"] >= 0.3


def test_html_shows_the_feature_table_and_links_every_histogram(melanoma_vs_nevus):
    summary, out, _ = melanoma_vs_nevus
    html = (out / "evaluation.html").read_text()
    for row in summary["features"]:
        assert f'data-feature="{row["key"]}"' in html
        assert f'data-ks="{row["ks"]}"' in html
        assert row["figure"] in html and (out / row["figure"]).stat().st_size > 1000
    assert (out / "evaluation_files" / "skin_tone.png").is_file()
    assert "not a diagnosis" in html


def test_per_image_records_carry_features_skin_tone_and_colours(melanoma_vs_nevus):
    summary, _, _ = melanoma_vs_nevus
    records = summary["images"]["real"]
    assert sorted(r["name"] for r in records) == sorted(f"{i}.jpg" for i in demo_ids("melanoma"))
    for r in records:
        assert r["lesion_found"] and r["error"] is None
        # a band, or none with the reason the ITA cannot carry one (vision/skin_tone.py)
        assert (r["skin_tone"] in ("very light", "light", "intermediate", "tan", "brown", "dark")) != bool(
            r["tone_reason"]), r
        assert len(r["colour_names"]) == r["values"]["colours"]
    tones = summary["sets"]["real"]["skin_tone"]
    assert sum(tones.values()) == 20
    assert tones["unreliable"] == sum(r["skin_tone"] is None for r in records) > 0


def test_the_same_inputs_give_a_byte_identical_evaluation_json(melanoma_vs_nevus, demo_sets, tmp_path):
    _, out, _ = melanoma_vs_nevus
    melanoma, nevus = demo_sets
    result = CliRunner().invoke(main, ["evaluate", str(melanoma), str(nevus), "--out", str(tmp_path), "--quiet",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "evaluation.json").read_bytes() == (out / "evaluation.json").read_bytes()


def browser_image_check(page: Path, profile: Path) -> tuple[int, int]:
    """(images on the page, images that did not load), as the page's own load-time script recorded them in a
    real headless Chromium."""
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
            page.resolve().as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body, done.stdout[:500]
    found = dict(re.findall(r'data-(images|broken)="(\d+)"', body.group(0)))
    assert set(found) == {"images", "broken"}, f"the page's image check did not run: {body.group(0)}"
    return int(found["images"]), int(found["broken"])


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_every_figure_of_the_page_loads_in_chromium_and_a_moved_page_says_so(melanoma_vs_nevus, tmp_path):
    _, out, _ = melanoma_vs_nevus
    assert browser_image_check(out / "evaluation.html", tmp_path / "p1") == (len(FEATURES) + 1, 0)
    moved = tmp_path / "moved.html"
    shutil.copy(out / "evaluation.html", moved)  # without evaluation_files/ beside it
    assert browser_image_check(moved, tmp_path / "p2") == (len(FEATURES) + 1, len(FEATURES) + 1)


def test_evaluation_json_reads_back_as_written_with_its_schema_version(melanoma_vs_nevus, tmp_path):
    summary, out, _ = melanoma_vs_nevus
    record = read_evaluation_record(out)
    assert summary["schema_version"] == record.schema_version == 1
    assert (record.sets, record.features, record.run, record.fid_kid) == (summary["sets"], summary["features"],
                                                                           None, None)
    assert [row["figure"] for row in record.features] == [f"evaluation_files/hist_{f.key}.png" for f in FEATURES]
    unversioned = {k: v for k, v in summary.items() if k != "schema_version"}  # as written before it had one
    (tmp_path / "evaluation.json").write_text(json.dumps(unversioned))
    assert read_evaluation_record(tmp_path) == record


@pytest.mark.parametrize("edit, message", [
    ({"schema_version": 3}, "evaluation record schema version 3; this medsynth reads version 1: written by a newer medsynth"),
    ({"features": {}}, "key 'features' must be a list, got {} (hand-edited wrongly?): evaluate again"),
    ({"sets": None}, "key 'sets' must be an object, got None"),
])
def test_a_hand_edited_evaluation_json_is_one_line_naming_the_file_and_key(melanoma_vs_nevus, tmp_path, edit,
                                                                             message):
    (tmp_path / "evaluation.json").write_text(json.dumps({**melanoma_vs_nevus[0], **edit}))
    with pytest.raises(MedsynthError) as caught:
        read_evaluation_record(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'evaluation.json'}: ") and message in str(caught.value)
    with pytest.raises(MedsynthError, match=re.escape(f"{tmp_path / 'none'}: no evaluation.json: run "
                                                      f"'medsynth evaluate' first")):
        read_evaluation_record(tmp_path / "none")


# ---- what REAL and SYNTH may be ----

def test_a_dataset_folder_means_its_train_images(tmp_path):
    dataset = tmp_path / "ds"
    linked(dataset / "train" / "1_melanoma", demo_ids("melanoma")[:3])
    (dataset / "train" / "1_melanoma" / "ISIC_0000002.caption").write_text("photo of skin\n")
    (dataset / "dataset.json").write_text("{}")
    found = image_set(dataset)
    assert found.kind == "dataset" and len(found.files) == 3
    assert all(p.suffix == ".jpg" for p in found.files)


def test_a_generate_output_means_its_synthetic_images(tmp_path):
    synthetic = tmp_path / "gen" / "synthetic"
    linked(synthetic / "images", demo_ids("nevus")[:2])
    (synthetic / "metadata.csv").write_text("image_name\n")
    (synthetic / "generation.json").write_text("{}")
    assert image_set(tmp_path / "gen").files == image_set(synthetic).files
    assert image_set(synthetic).kind == "synthetic" and len(image_set(synthetic).files) == 2


def test_an_isic_export_folder_means_its_images_and_is_not_called_synthetic():
    found = image_set(DEMO_IMAGES.parent)
    assert found.kind == "images" and found.root == DEMO_IMAGES and len(found.files) == 40


def test_a_folder_without_images_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MedsynthError, match="no images"):
        image_set(tmp_path)


def test_an_unreadable_image_is_recorded_not_fatal(tmp_path):
    folder = linked(tmp_path / "set", demo_ids("nevus")[:1])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    records = analyse(image_set(folder).files, folder, workers=1, progress=False)
    assert [(r.name, r.error) for r in records] == [("ISIC_0000000.jpg", None), ("broken.jpg", "unreadable")]


def test_missing_inception_weights_fail_in_one_line_before_any_work(demo_sets, tmp_path):
    melanoma, nevus = demo_sets
    result = CliRunner().invoke(main, ["evaluate", str(melanoma), str(nevus), "--out", str(tmp_path / "o"),
                                       "--inception-weights", str(tmp_path / "missing.pth"), "--quiet"])
    assert result.exit_code == 1
    assert "Inception weights file not found" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_unusable_inception_weights_fail_before_any_image_is_measured(demo_sets, tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="torch not installed (FID/KID are optional)")
    pytest.importorskip("torchvision", reason="torchvision not installed (FID/KID are optional)")
    import orchestrator.evaluate.features as evaluate_module

    measured = []
    monkeypatch.setattr(evaluate_module, "analyse", lambda files, *a, **k: measured.append(files) or [])
    melanoma, nevus = demo_sets
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["evaluate", str(melanoma), str(nevus), "--out", str(tmp_path / "o"),
                                       "--inception-weights", str(weights), "--quiet"])
    assert result.exit_code == 1 and "not a loadable torch state_dict" in result.output
    assert measured == [] and not (tmp_path / "o").exists()


def test_the_summary_counts_unreadable_images_apart_from_lesions_not_found(tmp_path):
    folder = linked(tmp_path / "set", demo_ids("nevus")[:1])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    result = CliRunner().invoke(main, ["evaluate", str(folder), str(folder), "--out", str(tmp_path / "o"),
                                       "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "(0 without a lesion found, 2 unreadable" in result.output


# ---- the KS statistic ----

def test_ks_of_identical_samples_is_zero_and_of_disjoint_ones_is_one():
    a = [1.0, 2.0, 3.0, 4.0]
    assert ks_two_sample(a, a)[0] == 0.0
    assert ks_two_sample(a, a)[1] == 1.0
    d, p = ks_two_sample(np.arange(30), np.arange(30) + 100)
    assert d == 1.0 and p < 1e-6


def test_ks_is_the_largest_gap_between_the_empirical_cdfs_with_ties():
    # F_a jumps to 2/3 at 2 while F_b is still 1/3 there: D = 1/3; ties (both have 2) must not inflate it
    assert ks_two_sample([1, 2, 2], [2, 3, 4])[0] == pytest.approx(2 / 3)
    assert ks_two_sample([0, 1, 2, 3], [0.5, 1.5, 2.5, 3.5])[0] == pytest.approx(0.25)


def test_ks_p_value_falls_as_samples_separate():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200)
    p_same = ks_two_sample(a, rng.normal(0, 1, 200))[1]
    p_shifted = ks_two_sample(a, rng.normal(0.5, 1, 200))[1]
    assert p_same > 0.05 > p_shifted


# ---- a training run's samples per epoch ----

def make_run(tmp_path: Path, output_name: str = "melanoma_lora") -> Path:
    """A run folder as sd-scripts leaves it: run.json and sample/<name>_e<epoch>_<idx>_<time>_<seed>.png."""
    run = tmp_path / "runs" / "r1"
    (run / "sample").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"output_name": output_name}))
    epochs = {0: demo_ids("nevus")[:2], 1: demo_ids("nevus")[2:4], 2: demo_ids("melanoma")[:2]}
    for epoch, ids in epochs.items():
        for idx, image_id in enumerate(ids):
            image = cv2.resize(cv2.imread(str(DEMO_IMAGES / f"{image_id}.jpg")), (256, 256))
            cv2.imwrite(str(run / "sample" / f"{output_name}_e{epoch:06d}_{idx:02d}_2026112605{epoch:02d}00_42.png"),
                        image)
    (run / "sample" / "unrelated.png").write_bytes(b"not a sample")
    return run


def test_run_samples_are_measured_per_epoch_against_the_real_set(demo_sets, tmp_path):
    melanoma, nevus = demo_sets
    run = make_run(tmp_path)
    result = CliRunner().invoke(main, ["evaluate", str(melanoma), str(nevus), "--run", str(run), "--quiet",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "evaluation" / "evaluation.json").read_text())
    trend = summary["run"]["trend"]
    assert [(t["label"], t["images"]) for t in trend] == [("epoch 0 (before training)", 2), ("epoch 1", 2),
                                                           ("epoch 2", 2)]
    for point in trend:
        assert set(point["features"]) == {f.key for f in FEATURES}
        assert 0 <= point["features"]["tds"]["ks"] <= 1
    html = (run / "evaluation" / "evaluation.html").read_text()
    assert 'data-point="epoch 2"' in html and (run / "evaluation" / "evaluation_files" / "trend.png").is_file()


def test_a_run_without_samples_is_a_one_line_error(demo_sets, tmp_path):
    melanoma, nevus = demo_sets
    run = make_run(tmp_path)
    shutil.rmtree(run / "sample")
    result = CliRunner().invoke(main, ["evaluate", str(melanoma), str(nevus), "--run", str(run), "--quiet"])
    assert result.exit_code == 1 and "no sample images" in result.output


def test_a_folder_that_is_no_run_is_refused(demo_sets, tmp_path):
    melanoma, nevus = demo_sets
    result = CliRunner().invoke(main, ["evaluate", str(melanoma), str(nevus), "--run", str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and "not a medsynth run folder (no run.json)" in result.output


def test_fid_kid_and_the_inception_space_screen_appear_when_weights_are_given(demo_sets, tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed (FID/KID are optional)")
    torchvision = pytest.importorskip("torchvision", reason="torchvision not installed (FID/KID are optional)")
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 299, 299))
    weights = tmp_path / "inception.pth"
    torch.save(model.state_dict(), weights)
    small_real = linked(tmp_path / "r", demo_ids("melanoma")[:3])
    small_synth = linked(tmp_path / "s", demo_ids("nevus")[:3])
    result = CliRunner().invoke(main, ["evaluate", str(small_real), str(small_synth), "--out", str(tmp_path / "o"),
                                       "--inception-weights", str(weights), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    fid = json.loads((tmp_path / "o" / "evaluation.json").read_text())["fid_kid"]
    assert fid["images"] == [3, 3] and fid["fid"] > 0 and fid["kid_std"] == 0.0
    assert "FID" in result.output and "data-fid" in (tmp_path / "o" / "evaluation.html").read_text()
    deep = json.loads((tmp_path / "o" / "evaluation.json").read_text())["memorization_inception"]
    # 3 real images are too few to calibrate on: every synthetic image still gets its nearest, nothing is flagged
    assert [m["nearest_real"] is not None for m in deep["images"]] == [True] * 3 and deep["flagged"] == 0
    assert "memorization screen (Inception features): not screened" in result.output
    assert 'id="memorization-inception"' in (tmp_path / "o" / "evaluation.html").read_text()


@pytest.mark.parametrize("lam,p", [(0.5, 0.9639), (0.8276, 0.5), (1.0, 0.27), (1.2238, 0.1), (1.3581, 0.05),
                                   (1.6276, 0.01), (1.9495, 0.001)])
def test_kolmogorov_tail_matches_published_critical_values_on_both_sides_of_the_series_switch(lam, p):
    assert kolmogorov_survival(lam) == pytest.approx(p, abs=5e-4)


def test_without_torch_inception_weights_fail_in_one_line_before_any_work(demo_sets, tmp_path, monkeypatch):
    melanoma, nevus = demo_sets
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)  # what an environment without torch looks like to import
    result = CliRunner().invoke(main, ["evaluate", str(melanoma), str(nevus), "--out", str(tmp_path / "o"),
                                       "--inception-weights", str(weights), "--quiet"])
    assert result.exit_code == 1
    assert "need torch and torchvision" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ---- nothing to compare ----

@pytest.mark.parametrize("broken_side", ["real", "synthetic"])
def test_a_set_whose_images_all_fail_to_decode_is_a_one_line_error_naming_its_folder(demo_sets, tmp_path,
                                                                                     broken_side):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        (broken / name).write_bytes(b"\xff\xd8not really a jpeg")
    melanoma, _ = demo_sets
    real, synth = (broken, melanoma) if broken_side == "real" else (melanoma, broken)
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["evaluate", str(real), str(synth), "--out", str(out), "--quiet",
                                       "--workers", "1"])
    assert result.exit_code == 1
    assert result.output == (f"error: {broken}: no usable images: none of its 3 image files decodes "
                             f"(a.jpg, b.png, c.jpg)\n")
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_out_folder_the_system_refuses_is_one_line_naming_it(tmp_path):
    one = linked(tmp_path / "one", demo_ids("melanoma")[:1])
    out = Path("/proc/medsynth-evaluation")  # /proc takes no new folders, even from root
    result = CliRunner().invoke(main, ["evaluate", str(one), str(one), "--out", str(out), "--quiet",
                                       "--workers", "1"])
    assert result.exit_code == 1
    assert result.output == f"error: {out}: No such file or directory\n"
