"""ISIC 2019: the metadata file and the one-hot ground truth, paired by header and joined on the image id."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import detect_format, read_metadata
from orchestrator.dataset.select import select_lesions

META = "ISIC_2019_Training_Metadata.csv"
GT = "ISIC_2019_Training_GroundTruth.csv"
FIELDS = ["image_id", "image_name", "sex", "age", "site", "diagnosis", "malignant"]


def raw_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pair(isic_dir: Path) -> pd.DataFrame:
    return read_metadata([isic_dir / META, isic_dir / GT])


@pytest.mark.parametrize("name", [META, GT])
def test_both_files_are_detected_as_isic2019(isic_dir: Path, name: str):
    header = (isic_dir / name).read_text().splitlines()[0].split(",")
    assert detect_format(header, isic_dir / name) == "isic2019"


def test_pair_selects_the_rows_whose_mel_column_is_one(pair: pd.DataFrame, isic_dir: Path):
    expected = {r["image"].removesuffix("_downsampled")
                for r in raw_rows(isic_dir / GT) if float(r["MEL"]) == 1.0}
    melanoma = select_lesions(pair)
    assert set(melanoma["image_id"]) == expected
    assert len(melanoma) == 4522


def test_pair_joins_every_image_once_with_metadata_and_diagnosis(pair: pd.DataFrame, isic_dir: Path):
    assert len(pair) == len(raw_rows(isic_dir / META)) == 25331
    assert pair["image_id"].is_unique
    assert pair["diagnosis"].notna().all()
    assert (pair["source_file"] == str(isic_dir / META)).all()
    raw = raw_rows(isic_dir / META)
    assert pair["sex"].isna().sum() == sum(r["sex"] == "" for r in raw)
    assert pair["site"].isna().sum() == sum(r["anatom_site_general"] == "" for r in raw)


def test_class_codes_become_names_and_malignant_follows_the_class(pair: pd.DataFrame):
    by_diagnosis = pair.groupby("diagnosis")["malignant"].agg(["min", "max"])
    assert set(by_diagnosis.index) == {"melanoma", "nevus", "basal cell carcinoma", "actinic keratosis",
                                       "benign keratosis", "dermatofibroma", "vascular lesion",
                                       "squamous cell carcinoma"}
    malignant = {"melanoma", "basal cell carcinoma", "actinic keratosis", "squamous cell carcinoma"}
    for name, row in by_diagnosis.iterrows():
        assert row["min"] == row["max"] == (name in malignant), name


def test_file_order_does_not_change_the_table(pair: pd.DataFrame, isic_dir: Path):
    reversed_order = read_metadata([isic_dir / GT, isic_dir / META])
    pd.testing.assert_frame_equal(reversed_order, pair)


def test_gender_header_gives_the_same_table(pair: pd.DataFrame, isic_dir: Path, tmp_path: Path):
    text = (isic_dir / META).read_bytes()
    copy = tmp_path / META
    copy.write_bytes(text.replace(b",lesion_id,sex\r\n", b",lesion_id,gender\r\n", 1))
    assert copy.read_bytes() != text
    with_gender = read_metadata([copy, isic_dir / GT])
    pd.testing.assert_frame_equal(with_gender[FIELDS], pair[FIELDS])


def test_downsampled_suffix_stays_in_the_file_name_but_not_the_id(pair: pd.DataFrame, isic_dir: Path):
    suffixed = [r["image"] for r in raw_rows(isic_dir / META) if r["image"].endswith("_downsampled")]
    rows = pair[pair["image_name"].str.endswith("_downsampled")]
    assert sorted(rows["image_name"]) == sorted(suffixed)
    assert (rows["image_id"] + "_downsampled" == rows["image_name"]).all()
    assert rows["image_id"].str.fullmatch(r"ISIC_\d{7}").all()


def test_ground_truth_alone_gives_diagnoses_without_demographics(isic_dir: Path):
    table = read_metadata([isic_dir / GT])
    assert len(select_lesions(table)) == sum(float(r["MEL"]) == 1.0 for r in raw_rows(isic_dir / GT))
    assert table[["sex", "age", "site"]].isna().all().all()


def test_metadata_alone_has_no_diagnosis_and_selection_says_so(isic_dir: Path):
    table = read_metadata([isic_dir / META])
    assert table["diagnosis"].isna().all()
    with pytest.raises(MedsynthError, match="melanoma.*no diagnosis.*ground-truth"):
        select_lesions(table)


def test_integer_one_hot_is_read_like_floats(tmp_path: Path):
    path = tmp_path / "gt.csv"
    path.write_text("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
                    "ISIC_0000001,1,0,0,0,0,0,0,0,0\nISIC_0000002,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n")
    assert read_metadata([path])["diagnosis"].tolist() == ["melanoma", "nevus"]


def test_unk_row_leaves_diagnosis_and_malignant_missing(tmp_path: Path):
    path = tmp_path / "gt.csv"
    path.write_text("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\nISIC_0000001,0,0,0,0,0,0,0,0,1\n")
    row = read_metadata([path]).iloc[0]
    assert pd.isna(row["diagnosis"]) and pd.isna(row["malignant"])


def test_row_marked_with_two_classes_is_an_error_naming_the_line(tmp_path: Path):
    path = tmp_path / "gt.csv"
    path.write_text("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
                    "ISIC_0000001,1,0,0,0,0,0,0,0,0\nISIC_0000002,1,1,0,0,0,0,0,0,0\n")
    with pytest.raises(MedsynthError, match=r"gt\.csv, line 3: .*MEL, NV"):
        read_metadata([path])


def test_non_numeric_one_hot_cell_is_an_error_naming_the_line(tmp_path: Path):
    path = tmp_path / "gt.csv"
    path.write_text("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\nISIC_0000001,yes,0,0,0,0,0,0,0,0\n")
    with pytest.raises(MedsynthError, match=r"gt\.csv, line 2: MEL 'yes' is not 0 or 1"):
        read_metadata([path])
