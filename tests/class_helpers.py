"""Demo builds with regularization images and with two classes (real `medsynth dataset build` runs), and the
training plan rendered from them, for the class, reg and sd-scripts parser tests."""

from __future__ import annotations

import csv
from pathlib import Path

from orchestrator.common.paths import DEMO_DIR
from orchestrator.dataset.build import build_dataset
from orchestrator.dataset.settings import DatasetSettings


def demo_rows(*, melanoma: int, nevus: int) -> list[dict[str, str]]:
    with (DEMO_DIR / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return ([r for r in rows if r["diagnosis"] == "melanoma"][:melanoma]
            + [r for r in rows if r["diagnosis"] == "nevus"][:nevus])


def demo_csv(folder: Path, *, melanoma: int = 20, nevus: int = 20) -> Path:
    """The demo metadata cut to its first `melanoma` melanomas and `nevus` nevi."""
    rows = demo_rows(melanoma=melanoma, nevus=nevus)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metadata.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def build(root: Path, *, melanoma: int = 20, nevus: int = 20, **settings) -> Path:
    """A demo dataset in root/ds built with `settings` (DatasetSettings fields) at 128 px."""
    csv_path = demo_csv(root / "csv", melanoma=melanoma, nevus=nevus)
    out = root / "ds"
    build_dataset(DatasetSettings(csv=(csv_path,), images=(DEMO_DIR / "images",), out=out, resolution=128,
                                  workers=2, **settings), progress=False)
    return out


def two_classes(root: Path, **settings) -> Path:
    """5 melanomas and 20 nevi as two balanced classes."""
    return build(root, melanoma=5, diagnoses=("melanoma", "nevus"), balance_classes=True, **settings)


def plan_for(dataset: Path, root: Path, *sets: str):
    """The default preset's plan for `dataset` at batch 1 (so sd-scripts' batches are its images exactly)."""
    from orchestrator.train.plan import prepare
    from orchestrator.train.preflight import Gpu
    from orchestrator.train.settings import load_settings

    settings = load_settings(preset_name="default", cwd=root,
                             options={"dataset": str(dataset),
                                      "pretrained_model_name_or_path": str(root / "sdxl.safetensors")},
                             sets=[f"runs_dir={str(root / 'runs')!r}", "train_batch_size=1", "resolution=1024", *sets])
    return prepare(settings, gpus=[Gpu("GPU", 80.0)], run_name="classes")
