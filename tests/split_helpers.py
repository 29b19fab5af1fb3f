"""The demo images as a table with patients, split and built with a test fold held out (real CLI runs), for the
split and leakage tests."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.common.paths import DEMO_DIR
from orchestrator.dataset.ingest import read_metadata


def demo_with_patients(tmp_path: Path) -> Path:
    """The demo images as an ISIC 2020 table: 40 images of 10 patients (4 each), half of them melanoma."""
    demo = read_metadata([DEMO_DIR / "metadata.csv"])
    lines = ["image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"]
    for i, row in demo.iterrows():
        bad = row["diagnosis"] == "melanoma"
        lines.append(f"{row['image_id']},IP_{i % 10:07d},{row['sex']},{row['age']},torso,"
                     f"{'melanoma' if bad else 'nevus'},{'malignant' if bad else 'benign'},{int(bad)}")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_dataset(tmp_path: Path, csv_path: Path, *extra: str, out: str = "ds") -> Path:
    """`medsynth dataset build` of the demo images from `csv_path` into tmp_path/out, with the options `extra`."""
    folder = tmp_path / out
    run = CliRunner().invoke(main, ["dataset", "build", "--csv", str(csv_path), "--images", str(DEMO_DIR / "images"),
                                    "--out", str(folder), "--resolution", "128", "--workers", "1", "--quiet", *extra])
    assert run.exit_code == 0, run.output
    return folder


def build_with_split(tmp_path: Path, csv_path: Path, *extra: str, test_fold: int = 2) -> Path:
    """tmp_path/split.csv (4 folds) from `csv_path`, and the dataset built without its test fold in tmp_path/ds."""
    split = tmp_path / "split.csv"
    run = CliRunner().invoke(main, ["dataset", "split", "--csv", str(csv_path), "--folds", "4", "--out", str(split)])
    assert run.exit_code == 0, run.output
    assert "wrote" in run.output and "malignant" in run.output
    return build_dataset(tmp_path, csv_path, "--split", str(split), "--test-fold", str(test_fold), *extra)
