"""Patient-level splits: stratified group k-fold, the split file, the build that holds a fold out, the leak check."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import DEMO_DIR
from orchestrator.dataset.ingest import read_metadata
from orchestrator.dataset.lesions import conform
from orchestrator.dataset.record import read_record
from orchestrator.dataset.settings import load_settings
from split_helpers import build_with_split, demo_with_patients
from orchestrator.dataset.split import (VERSION_LINE, Leaks, assign_folds, find_leaks, fold_summary, read_split,
                                        write_split)


def _synthetic(patients: int = 300, seed: int = 1) -> pd.DataFrame:
    """Patients of 1-6 images; about a third have one malignant image, a few two."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        size = int(rng.integers(1, 7))
        bad = min(size, int(rng.choice([0, 0, 1, 2], p=[0.4, 0.25, 0.3, 0.05])))
        rows += [{"image_id": f"ISIC_{p:04d}{i:03d}", "patient_id": f"IP_{p:07d}", "malignant": i < bad}
                 for i in range(size)]
    return conform(pd.DataFrame(rows))


def _folds_per_group(split) -> pd.Series:
    return split.table.groupby(["group_kind", "group_id"])["fold"].nunique()


def test_a_patient_never_straddles_folds():
    table = _synthetic()
    split = assign_folds(table, 5, seed=3)
    assert split.table["image_id"].tolist() == table["image_id"].tolist()   # every image, once
    assert (_folds_per_group(split) == 1).all()
    assert set(split.table["group_kind"]) == {"patient"}
    by_patient = split.table.groupby("group_id")["fold"].first()
    assert (split.table["fold"].to_numpy() == table["patient_id"].map(by_patient).to_numpy()).all()


def test_each_fold_holds_the_ideal_malignant_count_within_one_image():
    table = _synthetic()
    split = assign_folds(table, 5, seed=0)
    summary = fold_summary(split, table)
    ideal = table["malignant"].sum() / 5
    assert (abs(summary["malignant"] - ideal) <= 1).all(), summary
    assert summary["images"].max() - summary["images"].min() <= 6   # the largest patient has 6 images
    assert summary["images"].sum() == len(table) and summary["groups"].sum() == table["patient_id"].nunique()


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    table = _synthetic()
    first, again = assign_folds(table, 4, seed=7), assign_folds(table, 4, seed=7)
    pd.testing.assert_frame_equal(first.table, again.table)
    assert not first.table["fold"].equals(assign_folds(table, 4, seed=8).table["fold"])


HAM = ["lesion_id,image_id,dx,dx_type,age,sex,localization",
       "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp",
       "HAM_0000118,ISIC_0025030,bkl,histo,80.0,male,scalp",
       "HAM_0002730,ISIC_0026769,mel,histo,,female,back",
       "HAM_0002730,ISIC_0025661,mel,histo,55.0,unknown,unknown",
       "HAM_0001466,ISIC_0031633,nv,follow_up,75.0,male,lower extremity",
       "HAM_0002761,ISIC_0029068,bcc,histo,60.0,male,face"]


def test_ham10000_images_are_grouped_by_lesion(tmp_path):
    path = tmp_path / "HAM10000_metadata.csv"
    path.write_text("\n".join(HAM) + "\n")
    table = read_metadata([path])
    assert table["lesion_id"].tolist()[:2] == ["HAM_0000118", "HAM_0000118"]   # the reader keeps it
    warnings: list[str] = []
    split = assign_folds(table, 2, seed=0, warn=warnings.append)
    assert warnings == [] and split.group_kind == "lesion"
    assert split.table["group_id"].nunique() == 4 and (_folds_per_group(split) == 1).all()
    folds = split.table.set_index("image_id")["fold"]
    assert folds["ISIC_0026769"] == folds["ISIC_0025661"] and folds["ISIC_0027419"] == folds["ISIC_0025030"]


def test_images_without_patient_or_lesion_are_their_own_groups_with_a_warning():
    table = read_metadata([DEMO_DIR / "metadata.csv"])
    warnings: list[str] = []
    split = assign_folds(table, 3, warn=warnings.append)
    assert len(warnings) == 1 and "40 of 40 images have neither a patient nor a lesion id" in warnings[0]
    assert split.group_kind == "image" and (split.table["group_id"] == split.table["image_id"]).all()


def test_the_split_file_reads_back_as_written(tmp_path):
    split = assign_folds(_synthetic(40), 3, seed=2)
    path = tmp_path / "split.csv"
    write_split(path, split)
    assert path.read_text().splitlines()[:2] == [VERSION_LINE, "image_id,group_kind,group_id,fold"]
    back = read_split(path)
    pd.testing.assert_frame_equal(back.table, split.table)
    assert back.folds == 3 and back.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("lines, message", [
    (["# medsynth split, version 2", "image_id,group_kind,group_id,fold"], ", line 1: not a medsynth split file of version 1"),
    ([VERSION_LINE, "image,fold"], ", line 2: the header must be image_id,group_kind,group_id,fold"),
    ([VERSION_LINE, "image_id,group_kind,group_id,fold", "ISIC_1,patient,IP_1,0", "ISIC_2,family,F_1,1"],
     ", line 4: group_kind 'family' is not one of patient, lesion, image"),
    ([VERSION_LINE, "image_id,group_kind,group_id,fold", "ISIC_1,patient,IP_1,one"],
     ", line 3: fold 'one' is not a fold number"),
    ([VERSION_LINE, "image_id,group_kind,group_id,fold", "ISIC_1,patient,IP_1,0", "ISIC_1,patient,IP_1,0"],
     ", line 4: image ISIC_1 is already listed on line 3"),
    ([VERSION_LINE, "image_id,group_kind,group_id,fold", "ISIC_1,patient,IP_1,0", "ISIC_2,patient,IP_1,1"],
     ", line 4: patient IP_1 is in fold 1 here and in fold 0 above"),
    ([VERSION_LINE, "image_id,group_kind,group_id,fold", "ISIC_1,patient,IP_1"], ", line 3: expected 4 columns"),
    ([VERSION_LINE, "image_id,group_kind,group_id,fold"], ": no images listed after the header"),
])
def test_a_bad_split_file_is_one_line_naming_file_and_line(tmp_path, lines, message):
    path = tmp_path / "split.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MedsynthError) as err:
        read_split(path)
    assert str(err.value).startswith(f"{path}{message}") and "\n" not in str(err.value)


def test_a_missing_split_file_is_named(tmp_path):
    with pytest.raises(MedsynthError, match=r"absent\.csv: split file not found"):
        read_split(tmp_path / "absent.csv")


def test_a_build_with_a_test_fold_leaves_out_exactly_the_test_patients(tmp_path):
    csv_path = demo_with_patients(tmp_path)
    out = build_with_split(tmp_path, csv_path)
    split = read_split(tmp_path / "split.csv")
    table = read_metadata([csv_path])
    fold_of = split.table.set_index("image_id")["fold"]
    expected = table[(table["diagnosis"] == "melanoma") & (table["image_id"].map(fold_of) != 2)]
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert sorted(manifest["image_id"]) == sorted(expected["image_id"]) and len(manifest) > 0
    assert (manifest["fold"].astype(int) == manifest["image_id"].map(fold_of)).all()
    test_patients = set(split.table.loc[split.table["fold"] == 2, "group_id"])
    assert test_patients and not test_patients & set(manifest["patient_id"])
    record = read_record(out)
    assert record.split_sha256 == hashlib.sha256((tmp_path / "split.csv").read_bytes()).hexdigest()
    assert (record.test_fold, record.group_kind) == (2, "patient")
    assert record.split_file == str((tmp_path / "split.csv").resolve())
    assert find_leaks(out, split, 2) == Leaks([], [], [])


def test_the_leak_check_finds_a_planted_test_patient_image(tmp_path):
    csv_path = demo_with_patients(tmp_path)
    out = build_with_split(tmp_path, csv_path)
    split = read_split(tmp_path / "split.csv")
    assert find_leaks(out, split, 2).first() is None
    planted = split.table[split.table["fold"] == 2].iloc[0]
    with (out / "manifest.csv").open("a", newline="") as fh:
        header = (out / "manifest.csv").read_text().splitlines()[0].split(",")
        csv.DictWriter(fh, fieldnames=header, restval="", lineterminator="\n").writerow(
            {"image_id": "ISIC_9999999", "status": "ok", "patient_id": planted["group_id"]})
    leaks = find_leaks(out, split, 2)
    assert leaks.images == [] and leaks.patients == [planted["group_id"]]
    assert leaks.first() == f"patient {planted['group_id']} of the test fold is in the dataset (1 patients in all)"


def test_an_image_the_split_does_not_list_is_an_error_naming_it(tmp_path):
    csv_path = demo_with_patients(tmp_path)
    split = assign_folds(read_metadata([csv_path]), 3)
    write_split(tmp_path / "split.csv", dataclasses.replace(split, table=split.table.iloc[1:]))
    run = CliRunner().invoke(main, ["dataset", "build", "--csv", str(csv_path), "--images", str(DEMO_DIR / "images"),
                                    "--out", str(tmp_path / "ds"), "--split", str(tmp_path / "split.csv"),
                                    "--test-fold", "0", "--dry-run"])
    first = split.table["image_id"].iat[0]
    assert run.exit_code == 1
    assert f"train.csv, line 2: image {first} is not in {tmp_path / 'split.csv'}" in run.output


def test_split_and_test_fold_come_from_the_project_file_and_go_together(tmp_path):
    (tmp_path / "medsynth.toml").write_text("[dataset]\ncsv = 'a.csv'\nimages = 'img'\nout = 'ds'\n"
                                            "split_file = 'split.csv'\ntest_fold = 1\n")
    settings = load_settings(config=None, options={}, cwd=tmp_path)
    assert (settings.split_file, settings.test_fold) == (tmp_path / "split.csv", 1)
    run = CliRunner().invoke(main, ["dataset", "build", "--csv", "a.csv", "--images", ".", "--out", "x",
                                    "--split", "s.csv", "--dry-run"])
    assert run.exit_code == 1 and "--split and --test-fold go together" in run.output


def test_every_split_option_has_help_text():
    from orchestrator.cli.dataset import dataset_split

    assert all(getattr(param, "help", None) for param in dataset_split.params)


def test_an_earlier_dataset_record_has_no_split(tmp_path):
    from orchestrator.dataset.record import DatasetRecord, write_record

    write_record(tmp_path, DatasetRecord("melanoma", 1, 128, "train/1_melanoma", 1, 0, "t", ".caption", "ab"))
    data = json.loads((tmp_path / "dataset.json").read_text())
    for key in ("split_sha256", "test_fold", "group_kind", "split_file"):
        del data[key]
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    record = read_record(tmp_path)
    assert (record.split_sha256, record.test_fold, record.group_kind, record.split_file) == (None, None, None, None)


def test_the_real_isic_2020_table_splits_by_patient_with_equal_malignant_shares(isic_dir):
    table = read_metadata([isic_dir / "ISIC_2020_Training_GroundTruth.csv"])
    started = time.perf_counter()
    split = assign_folds(table, 5, seed=0)
    elapsed = time.perf_counter() - started
    summary = fold_summary(split, table)
    assert len(split.table) == 33126 and summary["groups"].sum() == 2056 and summary["malignant"].sum() == 584
    assert (_folds_per_group(split) == 1).all() and split.group_kind == "patient"
    share = summary["malignant"] / summary["images"]
    assert share.max() - share.min() < 0.002, summary
    assert (abs(summary["images"] - 33126 / 5) < 33126 / 5 * 0.01).all(), summary
    assert elapsed < 10
