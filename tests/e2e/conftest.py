"""Shared fixtures of the e2e modules (`make e2e`), session-scoped so one run trains once: the real `medsynth train`
path, with sd-scripts,
on a randomly initialised SDXL of the real architecture and offline tokenizers, for 2 epochs at 256 px: the main
run on two classes (two melanomas, two nevi; half held out for validation loss) with a regularization image and
masked loss; the sweep and resume runs on two melanomas. Needs ~22 GB of RAM and a few minutes on 2 cores. The checkpoint (6.9 GB, ~1.5 min, ~15 GB peak) and
the tokenizers are built once into $MEDSYNTH_E2E_CACHE (default build/e2e/) and reused.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from e2e_support import ALPHA, CACHE, DIM, EPOCHS, OUTPUT_NAME, RES, run_checked

from orchestrator.common.paths import DEMO_DIR, REPO_ROOT

# pytest-timeout: the suite's 120 s (pyproject.toml) counts fixture setup, so it would end these mid-training. Each
# test here gets more than the longest chain of subprocess timeouts its setup and body can run (checkpoint 1200 +
# tokenizers 120 + dataset 300 + sweep 7200 = 8820 s), so those fail first, with the subprocess's output; this one is
# the backstop for a hang outside them. A whole `make e2e` takes ~15 min on 2 cores.
E2E_TIMEOUT_S = 9000
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:  # (this hook sees every collected test, not just this folder's)
        if item.path.resolve().is_relative_to(_HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))


@pytest.fixture(scope="session")
def base_model(sd_scripts_dir) -> Path:
    ckpt = CACHE / "sdxl_random.safetensors"
    if not ckpt.is_file():  # its own process, so the ~15 GB it peaks at is returned before training starts
        run_checked([sys.executable, str(REPO_ROOT / "tools" / "make_random_sdxl.py"), str(ckpt), "--dtype", "bf16",
              "--sd-scripts", str(sd_scripts_dir), "--check"], timeout=1200)
    return ckpt


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch not installed (it ships the CLIP BPE vocab): run 'make setup-kohya'")
    run_checked([sys.executable, str(REPO_ROOT / "tools" / "build_tokenizers.py"), str(CACHE / "tokenizers")], timeout=120)
    return CACHE / "tokenizers"


def _demo_build(work: Path, rows_of: dict[str, int], *options: str, patients: bool = False) -> Path:
    """work/ds built by `medsynth dataset build` from the first rows_of[diagnosis] demo rows of each diagnosis; with
    `patients`, the k-th row of every diagnosis belongs to patient P<k> (a patient_id column, as ISIC exports have)."""
    with open(DEMO_DIR / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(work / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) + (["patient_id"] if patients else []))
        writer.writeheader()
        for diagnosis, count in rows_of.items():
            chosen = [r for r in rows if r["diagnosis"] == diagnosis][:count]
            writer.writerows([{**r, "patient_id": f"P{k}"} if patients else r for k, r in enumerate(chosen)])
    run_checked([sys.executable, "-m", "orchestrator.cli.main", "dataset", "build", "--csv", str(work / "metadata.csv"),
          "--images", str(DEMO_DIR / "images"), "--out", str(work / "ds"), "--resolution", str(RES), "--quiet",
          *options], timeout=300)
    return work / "ds"


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """Two demo melanoma images at 256 px with their automatic loss masks, built by `medsynth dataset build`."""
    return _demo_build(tmp_path_factory.mktemp("e2e_data"), {"melanoma": 2}, "--masks", "auto")


@pytest.fixture(scope="session")
def classes_dataset(tmp_path_factory) -> Path:
    """Two demo melanomas and two nevi as two balanced classes (1 repeat each) with their automatic loss masks,
    and one regularization image (a fifth demo image, renamed; never masked). Two patients, each with one melanoma
    and one nevus: validation_split 0.5 holds out one patient (one image of each class, by patient), and
    sd-scripts repeats the reg image to the two left: 4 steps an epoch at batch 1."""
    work = tmp_path_factory.mktemp("e2e_classes")
    (work / "prior").mkdir()
    shutil.copy(DEMO_DIR / "images" / "ISIC_0000003.jpg", work / "prior" / "prior_0000003.jpg")  # a 3rd nevus
    return _demo_build(work, {"melanoma": 2, "nevus": 2}, "--diagnosis", "melanoma", "--diagnosis", "nevus",
                       "--balance-classes", "--reg-images", str(work / "prior"), "--masks", "auto", patients=True)


@pytest.fixture(scope="session")
def run_dir(base_model, tokenizer_dir, classes_dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("e2e_runs")
    settings = {"tokenizer_cache_dir": tokenizer_dir, "runs_dir": runs, "train_batch_size": 1,
                "max_train_epochs": EPOCHS, "network_dim": DIM, "network_alpha": ALPHA, "output_name": OUTPUT_NAME,
                "num_sample_prompts": 1, "sample_width": RES, "sample_height": RES, "sample_steps": 2,
                "validation_split": 0.5,  # one of the two patients (an image of each class) held out
                "masked_loss": "true"}
    argv = [sys.executable, "-m", "orchestrator.cli.main", "train", "--preset", "default", "--run-name", "e2e",
            "--dataset", str(classes_dataset), "--model", str(base_model), "--offline", "--cpu"]
    for key, value in settings.items():
        argv += ["--set", f"{key}={value}"]
    env = dict(os.environ, MEDSYNTH_PYTHON=sys.executable, COLUMNS="200")
    run_checked(argv, timeout=3600, env=env)
    return runs / "e2e"


