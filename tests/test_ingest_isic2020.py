"""ISIC 2020 training metadata: the official ground truth and Kaggle's train.csv, on the real files."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.dataset.ingest import detect_format, read_metadata
from orchestrator.dataset.lesions import LESION_COLUMNS

GT = "ISIC_2020_Training_GroundTruth.csv"
KAGGLE = "isic2020_kaggle_train.csv"
FIELDS = ["image_id", "patient_id", "sex", "age", "site", "diagnosis", "malignant"]


def raw_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def gt(isic_dir: Path) -> pd.DataFrame:
    return read_metadata([isic_dir / GT])


@pytest.fixture(scope="module")
def kaggle(isic_dir: Path) -> pd.DataFrame:
    return read_metadata([isic_dir / KAGGLE])


@pytest.mark.parametrize("name", [GT, KAGGLE])
def test_both_forms_are_detected_as_isic2020(isic_dir: Path, name: str):
    header = (isic_dir / name).read_text().splitlines()[0].split(",")
    assert detect_format(header, isic_dir / name) == "isic2020"


@pytest.mark.parametrize("form", ["gt", "kaggle"])
def test_malignant_rows_are_the_target_one_rows(isic_dir: Path, form: str, request):
    table = request.getfixturevalue(form)
    expected = {r["image_name"] for r in raw_rows(isic_dir / (GT if form == "gt" else KAGGLE)) if r["target"] == "1"}
    assert set(table.loc[table["malignant"], "image_id"]) == expected
    assert len(expected) == 584


def test_every_row_is_read_once_with_the_lesion_schema(gt: pd.DataFrame, isic_dir: Path):
    assert list(gt.columns) == list(LESION_COLUMNS)
    assert len(gt) == len(raw_rows(isic_dir / GT)) == 33126
    assert gt["image_id"].is_unique
    assert (gt["source"] == "isic2020").all()


def test_integer_and_float_ages_give_identical_tables(gt: pd.DataFrame, kaggle: pd.DataFrame):
    pd.testing.assert_frame_equal(gt[FIELDS], kaggle[FIELDS])


def test_empty_cells_become_missing_never_text(gt: pd.DataFrame, isic_dir: Path):
    raw = raw_rows(isic_dir / GT)
    assert gt["sex"].isna().sum() == sum(r["sex"] == "" for r in raw)
    assert gt["age"].isna().sum() == sum(r["age_approx"] == "" for r in raw)
    assert gt["site"].isna().sum() == sum(r["anatom_site_general_challenge"] == "" for r in raw)
    for column in ("sex", "site", "diagnosis", "patient_id"):
        assert not gt[column].isin(["", "nan", "NaN", "unknown", "<NA>"]).any(), column


def test_unknown_diagnosis_is_missing_and_others_are_lower_case(gt: pd.DataFrame, isic_dir: Path):
    raw = raw_rows(isic_dir / GT)
    assert gt["diagnosis"].isna().sum() == sum(r["diagnosis"] == "unknown" for r in raw)
    assert "lentigo nos" in set(gt["diagnosis"].dropna())


def test_melanoma_row_normalises_sex_age_and_site(gt: pd.DataFrame):
    row = gt.set_index("image_id").loc["ISIC_0149568"]
    assert (row["sex"], row["age"], row["site"], row["diagnosis"], row["malignant"]) == \
        ("female", 55, "upper extremity", "melanoma", True)
    assert row["patient_id"] == "IP_0962375"


def test_rows_point_at_their_line_in_the_source_file(gt: pd.DataFrame, isic_dir: Path):
    lines = (isic_dir / GT).read_text().splitlines()
    row = gt.set_index("image_id").loc["ISIC_0149568"]
    assert row["source_file"] == str(isic_dir / GT)
    assert lines[row["source_line"] - 1].startswith("ISIC_0149568,")


def test_ground_truth_v2_with_lesion_id_and_no_final_newline_reads_the_same(gt: pd.DataFrame, isic_dir: Path,
                                                                           tmp_path: Path):
    lines = (isic_dir / GT).read_text().splitlines()
    v2 = []
    for i, line in enumerate(lines):
        cells = line.split(",")
        cells.insert(2, "lesion_id" if i == 0 else f"IL_{i:07d}")
        v2.append(",".join(cells))
    path = tmp_path / "ISIC_2020_Training_GroundTruth_v2.csv"
    path.write_bytes("\r\n".join(v2).encode())   # CRLF, no final newline
    pd.testing.assert_frame_equal(read_metadata([path])[FIELDS], gt[FIELDS])


def test_copy_without_diagnosis_column_names_target_rows_melanoma(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_text("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target\n"
                    "ISIC_0000001,IP_1,male,45.0,torso,1\n"
                    "ISIC_0000002,IP_1,male,45.0,torso,0\n")
    table = read_metadata([path])
    assert table["diagnosis"].tolist()[0] == "melanoma"
    assert pd.isna(table["diagnosis"].tolist()[1])


def test_reading_leaves_the_source_file_unchanged(isic_dir: Path, tmp_path: Path):
    path = tmp_path / GT
    path.write_bytes((isic_dir / GT).read_bytes())
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    read_metadata([path])
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_deotte_isic2019_table_names_class_codes_and_marks_bcc_malignant(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_text("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,"
                    "target,tfrecord,width,height\n"
                    "ISIC_0000001,-1,female,30.0,anterior torso,MEL,malignant,1,18,1022,767\n"
                    "ISIC_0000002,-1,female,60.0,anterior torso,BCC,malignant,0,3,1024,1024\n"
                    "ISIC_0000003,-1,unknown,45.0,,NV,benign,0,2,600,450\n")
    table = read_metadata([path])
    assert table["diagnosis"].tolist() == ["melanoma", "basal cell carcinoma", "nevus"]
    assert table["malignant"].tolist() == [True, True, False]
