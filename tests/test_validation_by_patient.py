"""Validation by patient: where the dataset's manifest names patients (or lesions), validation_split holds out whole
patients through a second [[datasets]] of run-local links (orchestrator.train.holdout), counted by the dry run and
written into the run folder without touching the dataset. sd-scripts' own reading is in tests/test_kohya_parsers.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import toml
from click.testing import CliRunner

from orchestrator.cli.train import train as train_command
from orchestrator.common.errors import MedsynthError
from orchestrator.runs.folder import write_run_dir
from orchestrator.train.plan import prepare, run_record
from orchestrator.train.settings import load_settings
from train_helpers import make_dataset

PATIENTS = ("p1", "p1", "p2", "p2", "p3", "p3")


def plan_by_group(root: Path, *sets: str, images: int = 6, **groups):
    rows = [("female", "torso", str(40 + i), False) for i in range(images)]
    settings = load_settings(preset_name="default", cwd=root, sets=["train_batch_size=2", *sets],
                             options={"dataset": str(make_dataset(root / "ds", rows, repeats=3, **groups)),
                                      "runs_dir": str(root / "runs")})
    return prepare(settings, gpus=None, run_name="val")


def _patient_of(dataset: Path) -> dict[str, str]:
    with (dataset / "manifest.csv").open(encoding="utf-8", newline="") as f:
        return {Path(r["output_path"]).name: r["patient_id"] for r in csv.DictReader(f)}


def test_whole_patients_are_held_out_in_a_second_dataset_of_run_local_links(tmp_path):
    plan = plan_by_group(tmp_path, "validation_split=0.34", patients=PATIENTS)
    sched = plan.schedule
    # 0.34 × 6 = 2.04: one patient of 2 images comes closest; the other 4 images train, 3 repeats each
    assert (sched.images, sched.validation_images, sched.validation_by) == (4, 2, "patient")
    assert (sched.steps_per_epoch, sched.validation_batches, sched.validation_overlap) == (6, 1, 0)
    assert "validation: 2 of 6 images held out by patient, 1 batches" in sched.describe()
    data = toml.loads(plan.files["dataset.toml"])
    assert data["general"]["validation_split"] == 0.0   # sd-scripts' split by image is off
    main, held = data["datasets"]
    assert "validation_split" not in main and held["validation_split"] == 1.0
    assert main["subsets"][0]["image_dir"] == str(plan.run_dir / "data" / "train" / "3_melanoma")
    assert held["subsets"][0]["image_dir"] == str(plan.run_dir / "data" / "validation" / "3_melanoma")
    assert (held["resolution"], held["batch_size"]) == (main["resolution"], main["batch_size"])
    patient = _patient_of(plan.dataset.path)
    sides = {where: {patient[Path(n).name] for n in plan.links if n.startswith(f"data/{where}/") and
                     n.endswith(".jpg")} for where in ("train", "validation")}
    assert len(sides["validation"]) == 1 and len(sides["train"]) == 2 and not sides["train"] & sides["validation"]
    assert sum(n.endswith(".caption") for n in plan.links) == 6   # each image keeps its caption
    assert plan.held_out.groups == tuple(f"patient:{p}" for p in sorted(sides["validation"]))


def test_the_run_folder_links_the_images_and_leaves_the_dataset_unchanged(tmp_path):
    plan = plan_by_group(tmp_path, "validation_split=0.34", patients=PATIENTS)
    before = sorted(p.relative_to(plan.dataset.path) for p in plan.dataset.path.rglob("*"))
    record = run_record(plan, argv=["python"], cwd=tmp_path, env_changes={}, commits={}, packages={}, gpu={})
    run_dir = write_run_dir(plan.run_dir, plan.files, command_sh="#!/bin/sh\n", record=record, links=plan.links)
    for name, source in plan.links.items():
        assert (run_dir / name).read_bytes() == source.read_bytes()
    assert len(list((run_dir / "data" / "validation" / "3_melanoma").glob("*.jpg"))) == 2
    assert sorted(p.relative_to(plan.dataset.path) for p in plan.dataset.path.rglob("*")) == before
    assert json.loads((run_dir / "run.json").read_text())["held_out"]["by"] == "patient"


def test_a_dataset_without_patients_is_split_by_image_by_sd_scripts(tmp_path):
    plan = plan_by_group(tmp_path, "validation_split=0.5")
    data = toml.loads(plan.files["dataset.toml"])
    assert data["general"]["validation_split"] == 0.5 and len(data["datasets"]) == 1
    assert plan.links == {} and plan.held_out is None and plan.schedule.validation_by == "image"


def test_lesions_are_held_out_whole_when_the_manifest_has_no_patients(tmp_path):
    plan = plan_by_group(tmp_path, "validation_split=0.5", lesions=("l1", "l1", "l1", "l2", "l2", "l2"))
    assert (plan.schedule.validation_images, plan.schedule.validation_by) == (3, "lesion")


def test_the_held_out_patients_follow_validation_seed(tmp_path):
    chosen = {plan_by_group(tmp_path / str(seed), "validation_split=0.34", f"validation_seed={seed}",
                            patients=PATIENTS).held_out.groups for seed in range(6)}
    assert len(chosen) > 1


def test_a_share_smaller_than_any_patient_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match=r"validation_split 0.1 of 6 images holds out no whole patient or lesion "
                                            r"\(the smallest has 2 images\)"):
        plan_by_group(tmp_path, "validation_split=0.1", patients=PATIENTS)


def test_a_share_that_takes_every_image_of_a_folder_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match=r"validation_split 0.9 holds out every image of .*3_melanoma"):
        plan_by_group(tmp_path, "validation_split=0.9", patients=("p1",) * 6)


def test_dry_run_says_the_images_are_held_out_by_patient(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    monkeypatch.chdir(tmp_path / "bin")
    ds = make_dataset(tmp_path / "ds", repeats=2, patients=("a", "a", "b"))
    result = CliRunner().invoke(train_command, [
        "--dry-run", "--dataset", str(ds), "--sd-scripts", str(tmp_path / "nowhere"), "--run-name", "demo",
        "--set", f"runs_dir={json.dumps(str(tmp_path / 'runs'))}", "--set", "validation_split=0.4",
        "--set", "train_batch_size=1"], env={"PATH": str(tmp_path / "bin")}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "held out by patient" in result.output and "validation_split = 1.0" in result.output
    assert not (tmp_path / "runs").exists()   # a dry run writes no links
