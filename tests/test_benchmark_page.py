"""benchmark.html from a benchmark.json record: every arm's row (a skipped one with its reason), the strata, the
split and the leakage check, the figures as real PNGs, names escaped; and in a real headless Chromium every figure
loads and nothing is logged to the console. The Chromium part skips when Debian's `chromium` is not installed."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from markupsafe import escape

from orchestrator.benchmark.page import METRIC_LABELS, write_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EVIL = 'synthetic x0.5 <script>alert("x")</script> & $co$'


def _ci(value: float | None, half: float = 0.08) -> dict | None:
    if value is None:
        return None
    return {"value": value, "lo": max(0.0, value - half), "hi": min(1.0, value + half), "seed_sd": half / 4}


def _arm(name: str, kind: str, ratio: float | None, level: float, rng: np.random.Generator, **sizes) -> dict:
    """An arm that ran on 3 seeds, its metrics about `level`, with ROC curve, paired differences and strata."""
    metrics = {key: _ci(round(level - 0.05 * i, 4)) for i, key in enumerate(METRIC_LABELS)}
    fpr = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, 40)), [1.0]])
    strata = {"sex": {"female": {"n": 40, "positives": 6, "auroc": _ci(level - 0.02)},
                      "male": {"n": 36, "positives": 5, "auroc": _ci(level + 0.01)},
                      "unknown": {"n": 4, "positives": 0, "auroc": None}},  # one class absent: undefined
              "age_band": {"<40": {"n": 30, "positives": 3, "auroc": _ci(level - 0.1, 0.2)},
                           "40-59": {"n": 50, "positives": 8, "auroc": {"value": None, "lo": None, "hi": None}}},
              "skin_tone": {"intermediate": {"n": 80, "positives": 11, "auroc": _ci(level)}}}
    return {"name": name, "kind": kind, "ratio": ratio, "skipped": None, **sizes,
            "seeds": [{"seed": s, "seconds": 3.2, **{k: m["value"] for k, m in metrics.items()}} for s in (0, 1, 2)],
            "metrics": metrics, "vs_real": None if kind == "real" else
            {key: {"diff": level - 0.8, "lo": level - 0.86, "hi": level - 0.74, "p": 0.0123} for key in METRIC_LABELS},
            "roc": {"fpr": fpr.tolist(), "tpr": np.minimum(1.0, fpr ** (1 - level + 0.1)).tolist()}, "strata": strata}


def make_record() -> dict:
    """benchmark.json as benchmark/record.py writes it (BENCH_DESIGN.md): the real-only arm, oversampling, one
    synthetic ratio whose name needs escaping, the real control, a ratio skipped for want of images; leakage not
    traced to the end."""
    rng = np.random.default_rng(3)
    base = {"train_images": 24, "train_malignant": 8, "synthetic_images": 0, "extra_real": 0}
    arms = [_arm("real", "real", 0, 0.80, rng, **base),
            _arm("oversample", "oversample", None, 0.81, rng, **base),
            _arm(EVIL, "synthetic", 0.5, 0.84, rng, **{**base, "train_images": 28, "synthetic_images": 4}),
            _arm("control", "control", None, 0.86, rng, **{**base, "train_images": 32, "extra_real": 8})]
    arms[1]["metrics"]["sens_at_spec95"] = {"value": None, "lo": None, "hi": None, "seed_sd": None}
    arms[3]["vs_real"]["balanced_accuracy"]["p"] = 0.0  # no replicate crossed zero
    arms.append({"name": "synthetic x10", "kind": "synthetic", "ratio": 10, "train_images": 0, "train_malignant": 0,
                 "synthetic_images": 0, "extra_real": 0, "skipped": "needs 80 synthetic images, the folder has 40"})
    return {"schema_version": 1, "medsynth_version": "0.1.0",
            "settings": {"model": "resnet18", "image_size": 64, "epochs": 5, "seeds": [0, 1, 2],
                         "ratios": [0, 0.5, 10], "rare_share": 0.5, "batch_size": 32, "learning_rate": 0.001,
                         "weights": None, "weights_sha256": None, "n_boot": 2000, "device": "cpu"},
            "split": {"file": "datasets/melanoma/split.csv", "sha256": "ab" * 32, "folds": 5, "test_fold": 0,
                      "group_kind": "patient", "train": {"images": 32, "malignant": 16, "groups": 30},
                      "test": {"images": 80, "malignant": 11, "groups": 61}},
            "leakage": {"status": "untraced", "checked": ["synthetic/metadata.csv", "runs/x/run.json"],
                        "message": "runs/x/run.json names no dataset manifest, so the LoRA's training patients are "
                                   "unknown"},
            "synthetic": {"dir": "synthetic", "images": 40, "malignant": 40, "missing": 0, "not_malignant": 0}, "arms": arms}


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    return write_page(tmp_path_factory.mktemp("bench"), make_record())


def _row(text: str, name: str) -> str:
    found = re.search(rf'<tr data-arm="{re.escape(str(escape(name)))}"[^>]*>(.*?)</tr>', text, re.DOTALL)
    assert found, f"no row for {name}"
    return found.group(1)


def test_every_arm_has_a_row_with_its_metrics_and_differences_and_a_skipped_arm_its_reason(page):
    text = page.read_text(encoding="utf-8")
    real = _row(text, "real")
    assert "0.800 [0.720, 0.880]" in real and "Δ" not in real  # AUROC of the baseline, no difference to itself
    assert "0.600 [0.520, 0.680]" in real  # balanced accuracy, the 5th metric
    control = _row(text, "control")
    assert "0.860 [0.780, 0.940]" in control and "Δ +0.060 [+0.000, +0.120], p = 0.012" in control
    assert "Δ +0.060 [+0.000, +0.120], p &lt; 0.001" in control  # balanced accuracy: p of 0 is not 0.000
    assert re.search(r'data-metric="sens_at_spec95"[^>]*>—', _row(text, "oversample"))  # undefined: a dash
    assert ">32<" in control and ">8<" in control  # training images, extra real images
    skipped = _row(text, "synthetic x10")
    assert "skipped: needs 80 synthetic images, the folder has 40" in skipped and "[" not in skipped
    assert text.count('<tr data-arm="') == 5


def test_an_arm_name_is_escaped_not_run(page):
    text = page.read_text(encoding="utf-8")
    assert "<script>alert" not in text
    assert text.count(f">{escape(EVIL)}<") == 2  # its row and its strata column
    assert "0.840 [0.760, 0.920]" in _row(text, EVIL)


def test_strata_show_every_value_and_a_dash_where_auroc_is_undefined(page):
    text = page.read_text(encoding="utf-8")
    strata = re.findall(r'<tr data-field="([^"]+)" data-value="([^"]+)">(.*?)</tr>', text, re.DOTALL)
    assert [(f, html.unescape(v)) for f, v, _ in strata] == [
        ("sex", "female"), ("sex", "male"), ("sex", "unknown"), ("age_band", "<40"), ("age_band", "40-59"),
        ("skin_tone", "intermediate")]
    unknown = {(f, v): row for f, v, row in strata}[("sex", "unknown")]
    assert unknown.count(">—<") == 4 and ">4<" in unknown  # four arms ran; n = 4
    assert "0.780 [0.700, 0.860]" in strata[0][2]  # female, real


def test_the_split_and_an_untraced_leakage_check_are_shown_as_a_warning(page):
    text = page.read_text(encoding="utf-8")
    assert "ab" * 32 in text and "datasets/melanoma/split.csv" in text
    assert "80 images, 11 malignant, 61 patients" in text and "test fold 0" in text
    assert re.search(r'<p class="warning" id="leakage-warning" data-status="untraced">Leakage untraced', text)
    assert '<li><code>runs/x/run.json</code></li>' in text and "training patients are unknown" in text
    clean = {**make_record(), "leakage": {"status": "clean", "checked": [], "message": "no test patient in it"}}
    clean_text = write_page(page.parent / "clean", clean).read_text(encoding="utf-8")
    assert "leakage-warning" not in clean_text and 'data-status="clean"><strong>clean' in clean_text


def test_the_figures_are_real_pngs_linked_relatively(page):
    text = page.read_text(encoding="utf-8")
    links = re.findall(r'<img src="([^"]+)"', text)
    assert links == ["benchmark_files/roc.png", "benchmark_files/ratio.png"]
    for link in links:
        path = page.parent / link
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = cv2.imread(str(path))
        assert image is not None and 300 <= image.shape[0] <= 1000 and 400 <= image.shape[1] <= 1000
        assert image.std() > 20  # lines drawn, not a blank canvas
    assert not list(page.parent.rglob(".*tmp*"))  # written atomically: no temporary file left


def test_a_benchmark_where_no_arm_ran_still_gets_a_page_saying_why(tmp_path):
    record = make_record()
    for arm in record["arms"]:
        arm["skipped"] = arm["skipped"] or "no malignant image in the training set"
    text = write_page(tmp_path, record).read_text(encoding="utf-8")
    assert text.count("skipped: no malignant image in the training set") == 4
    assert "<tr data-field=" not in text
    assert cv2.imread(str(tmp_path / "benchmark_files" / "ratio.png")) is not None


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_in_chromium_every_figure_loads_and_nothing_is_logged_to_the_console(page, tmp_path):
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
            "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body and 'data-images="2"' in body.group(0) and 'data-broken="0"' in body.group(0), done.stdout[:500]
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []  # the page logs nothing at all
